from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pneumonitor.reading import UnsupportedInput, find_inputs, read_radiograph, to_stored_grid

ORIGINAL = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FRONTAL_CHESTS = [ORIGINAL, "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm",
                  "gdcm-CR-MONO1-10-chest.dcm"]


def make_dicom(path: Path, pixels: np.ndarray, photometric="MONOCHROME2", modality="DX", **attributes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.StudyDate = "P1", modality, "20200301"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsStored = attributes.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(dtype=np.uint16, high=4095, shape=(80, 96)):
    """Values increase from the image left (0) to the image right (high)."""
    return np.tile(np.linspace(0, high, shape[1]), (shape[0], 1)).astype(dtype)


def region_means(pixels):
    h, w = pixels.shape
    rows = slice(int(h * 0.3), int(h * 0.7))
    spine = pixels[rows, int(w * 0.45) : int(w * 0.55)].mean()
    lungs = (pixels[rows, int(w * 0.2) : int(w * 0.35)].mean() + pixels[rows, int(w * 0.65) : int(w * 0.8)].mean()) / 2
    return spine, lungs


def test_every_sample_loads(dicom_samples):
    shapes = {p.name: read_radiograph(p).pixels.shape for p in dicom_samples}
    assert shapes["dx_image.dcm"] == (169, 211)
    assert shapes["gdcm-CR-MONO1-10-chest.dcm"] == (440, 440)
    assert shapes[ORIGINAL] == (1024, 1024)
    for path in dicom_samples:
        r = read_radiograph(path)
        assert r.pixels.dtype == np.float32 and r.pixels.min() == 0.0 and r.pixels.max() == 1.0
        assert r.meta["sop_instance_uid"] and r.meta["study_instance_uid"] and r.meta["modality"] in ("CR", "DX")


@pytest.mark.parametrize("name", FRONTAL_CHESTS)
def test_frontal_samples_have_lungs_darker_than_spine(shared_data, name):
    spine, lungs = region_means(read_radiograph(shared_data / "cxr-dicom-samples" / name).pixels)
    assert lungs < spine - 0.15


def test_fake_monochrome1_is_inverted(shared_data):
    # torchxrayvision made this file by relabelling the original's pixels MONOCHROME1: a correct reader inverts it.
    folder = shared_data / "cxr-dicom-samples"
    original = read_radiograph(folder / ORIGINAL).pixels
    fake = read_radiograph(folder / "Fake_MONOHR1.dcm").pixels
    np.testing.assert_allclose(fake, 1.0 - original, atol=1e-6)


def test_dx_monochrome1_sample_polarity(shared_data):
    # a lateral thorax (MONOCHROME1, Presentation LUT INVERSE): the air outside the body must come out dark,
    # the dorsal spine bright
    pixels = read_radiograph(shared_data / "cxr-dicom-samples" / "dx_image.dcm").pixels
    h, w = pixels.shape
    air_below_body = pixels[int(h * 0.92) :, int(w * 0.3) : int(w * 0.7)].mean()
    spine_band = pixels[int(h * 0.15) : int(h * 0.3), int(w * 0.3) : int(w * 0.9)].mean()
    assert air_below_body < spine_band


def test_identity_attributes_kept(shared_data):
    r = read_radiograph(shared_data / "cxr-dicom-samples" / ORIGINAL)
    assert r.meta["view_position"] == "PA" and r.meta["pixel_spacing"] == (0.168, 0.168)
    assert r.meta["series_instance_uid"] and r.dataset is not None and "PixelData" not in r.dataset


def test_monochrome1_16bit_with_rescale_and_window(tmp_path):
    path = make_dicom(
        tmp_path / "m1.dcm", gradient(), photometric="MONOCHROME1", BitsStored=12,
        RescaleSlope=2, RescaleIntercept=-100, WindowCenter=2000, WindowWidth=2000,
    )
    pixels = read_radiograph(path).pixels
    # MONOCHROME1: high stored values display dark -> after conversion the image right is dark
    assert pixels[:, 0].mean() == pytest.approx(1.0) and pixels[:, -1].mean() == pytest.approx(0.0)
    # window [1000, 3000] in rescaled units = stored [550, 1550]: outside it the image is saturated
    stored_to_col = np.linspace(0, 4095, 96)
    saturated_bright = stored_to_col * 2 - 100 < 1000
    assert np.all(pixels[0, saturated_bright] == 1.0)
    inside = (stored_to_col * 2 - 100 > 1100) & (stored_to_col * 2 - 100 < 2900)
    assert np.all((pixels[0, inside] > 0) & (pixels[0, inside] < 1))


def test_monochrome2_8bit(tmp_path):
    pixels = read_radiograph(make_dicom(tmp_path / "m2.dcm", gradient(np.uint8, 255))).pixels
    assert pixels[:, 0].mean() == 0.0 and pixels[:, -1].mean() == 1.0


@pytest.mark.parametrize(
    "attributes,reason",
    [
        ({"ViewPosition": "LL"}, "lateral view"),
        ({"ViewPosition": "LATERAL"}, "lateral view"),
        ({"modality": "CT"}, "modality CT"),
        ({"shape": (40, 200)}, "too small"),
        ({"NumberOfFrames": 2}, "2 frames"),
    ],
)
def test_unsupported_dicom_reasons(tmp_path, attributes, reason):
    attributes = dict(attributes)
    shape = attributes.pop("shape", (80, 96))
    modality = attributes.pop("modality", "DX")
    pixels = gradient(np.uint8, 255, shape=shape)
    if attributes.get("NumberOfFrames") == 2:
        pixels = np.concatenate([pixels, pixels])
        pixels = pixels[: shape[0]]
    path = make_dicom(tmp_path / "x.dcm", pixels, modality=modality, **attributes)
    with pytest.raises(UnsupportedInput, match=reason):
        read_radiograph(path)


def test_non_image_dicom(tmp_path):
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(UnsupportedInput, match="no pixel data"):
        read_radiograph(tmp_path / "sr.dcm")


def test_truncated_and_garbage_files(tmp_path, shared_data):
    data = (shared_data / "cxr-dicom-samples" / "gdcm-CR-MONO1-10-chest.dcm").read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.dcm").write_bytes(b"this is not dicom at all" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    for name, reason in [("truncated.dcm", "could not be|decoded"), ("garbage.dcm", "not a DICOM|could not be read"),
                         ("empty.dcm", "empty"), ("broken.png", "could not be read as an image")]:
        with pytest.raises(UnsupportedInput, match=reason):
            read_radiograph(tmp_path / name)


def test_png_8_and_16_bit_and_rgb(tmp_path):
    g8 = gradient(np.uint8, 255)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    Image.fromarray(gradient(np.uint16, 1023)).save(tmp_path / "g16.png")
    Image.fromarray(np.stack([g8] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    p8 = read_radiograph(tmp_path / "g8.png").pixels
    np.testing.assert_allclose(p8, g8 / 255.0, atol=1e-6)
    p16 = read_radiograph(tmp_path / "g16.png").pixels
    assert p16.min() == 0.0 and p16.max() == 1.0 and p16.shape == (80, 96)
    prgb = read_radiograph(tmp_path / "rgb.jpg").pixels
    assert prgb.shape == (80, 96) and abs(float(prgb[:, -1].mean()) - 1.0) < 0.03


def test_constant_and_nan_images_are_refused(tmp_path):
    import nibabel  # SimpleITK's writer turns NaN into 0

    Image.fromarray(np.full((80, 80), 7, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(UnsupportedInput, match="constant"):
        read_radiograph(tmp_path / "flat.png")
    array = np.random.default_rng(0).random((80, 80)).astype(np.float32)
    array[3, 3] = np.nan
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(UnsupportedInput, match="NaN"):
        read_radiograph(tmp_path / "nan.nii.gz")


def test_nifti_2d(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(gradient(np.uint16, 4000).astype(np.int16))
    image.SetSpacing((0.2, 0.3))
    sitk.WriteImage(image, str(tmp_path / "cxr.nii.gz"))
    r = read_radiograph(tmp_path / "cxr.nii.gz")
    assert r.pixels.shape == (80, 96) and r.meta["pixel_spacing"] == pytest.approx((0.3, 0.2))
    assert r.pixels[:, -1].mean() == 1.0


def test_find_inputs_recurses_and_keeps_explicit_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(gradient(np.uint8, 255)).save(tmp_path / "a" / "b" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("hello")
    make_dicom(tmp_path / "a" / "NOSUFFIX", gradient(np.uint8, 255))
    found = find_inputs([tmp_path, tmp_path / "a" / "notes.txt"])
    names = sorted(p.name for p in found)
    assert names == ["NOSUFFIX", "notes.txt", "x.png"]
    with pytest.raises(UnsupportedInput):
        read_radiograph(tmp_path / "a" / "notes.txt")


# -- DICOM semantic rules (issue 18) ------------------------------------------------------------------------------
def _code(value, meaning, scheme="SCT"):
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@pytest.mark.parametrize(
    "attributes,reason",
    [
        ({"ViewPosition": "RLO"}, "not a frontal view"),
        ({"ViewPosition": "LLD"}, "lateral view"),
        ({"ViewCodeSequence": [_code("399198007", "right lateral")]}, "lateral view"),
        ({"ViewCodeSequence": [_code("399163007", "right posterior oblique")]}, "not a frontal view"),
        ({"PatientOrientation": ["A", "F"]}, "lateral view"),
        ({"PresentationIntentType": "FOR PROCESSING"}, "FOR PROCESSING"),
    ],
)
def test_view_allowlist_and_intent_refuse(tmp_path, attributes, reason):
    path = make_dicom(tmp_path / "x.dcm", gradient(np.uint8, 255), **attributes)
    with pytest.raises(UnsupportedInput, match=reason):
        read_radiograph(path)


@pytest.mark.parametrize(
    "attributes",
    [
        {"ViewPosition": "AP SUPINE"},
        {"ViewPosition": "PA"},
        {"ViewCodeSequence": [_code("399348003", "postero-anterior")]},
        {"ViewCodeSequence": [_code("R-10206", "antero-posterior", "SRT")]},
        {"PresentationIntentType": "FOR PRESENTATION", "PatientOrientation": ["L", "F"]},
        {},  # a silent header is left to the QC network
    ],
)
def test_view_allowlist_accepts_frontal(tmp_path, attributes):
    assert read_radiograph(make_dicom(tmp_path / "x.dcm", gradient(np.uint8, 255), **attributes)).shape == (80, 96)


def test_patient_orientation_flips_and_warns(tmp_path):
    pixels = gradient(np.uint8, 255)
    pixels[:10] = 0  # a dark band at the top tells top from bottom
    standard = read_radiograph(make_dicom(tmp_path / "lf.dcm", pixels, PatientOrientation=["L", "F"]))
    assert standard.meta["warnings"] == [] and standard.pixels[40, -1] > standard.pixels[40, 0]
    # rows running toward the patient's right: an AP film stored unflipped; the columns must be flipped
    mirrored = read_radiograph(make_dicom(tmp_path / "rf.dcm", pixels, PatientOrientation=["R", "F"]))
    np.testing.assert_array_equal(mirrored.pixels, standard.pixels[:, ::-1])
    assert "flipped left-right" in mirrored.meta["warnings"][0]
    upside_down = read_radiograph(make_dicom(tmp_path / "lh.dcm", pixels, PatientOrientation=["L", "H"]))
    np.testing.assert_array_equal(upside_down.pixels, standard.pixels[::-1])
    silent = read_radiograph(make_dicom(tmp_path / "none.dcm", pixels))
    assert "PatientOrientation absent" in silent.meta["warnings"][0]
    np.testing.assert_array_equal(silent.pixels, standard.pixels)
    # writers put results back on the stored grid; the oriented image reads L\F
    both = read_radiograph(make_dicom(tmp_path / "rh.dcm", pixels, PatientOrientation=["R", "H"]))
    assert both.meta["orientation_flips"] == ("columns", "rows") and both.meta["patient_orientation"] == ("L", "F")
    stored = pixels.astype(np.float32) / 255
    np.testing.assert_allclose(to_stored_grid(both.pixels, both.meta), stored, atol=1e-6)
    assert mirrored.meta["patient_orientation"] == ("L", "F") and standard.meta["orientation_flips"] == ()
    np.testing.assert_array_equal(to_stored_grid(standard.pixels, standard.meta), standard.pixels)


def test_presentation_lut_inverse(tmp_path):
    identity = read_radiograph(make_dicom(tmp_path / "i.dcm", gradient(np.uint8, 255), PresentationLUTShape="IDENTITY"))
    inverse = read_radiograph(make_dicom(tmp_path / "v.dcm", gradient(np.uint8, 255), PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(inverse.pixels, 1.0 - identity.pixels, atol=1e-6)
    # MONOCHROME1 with INVERSE is one statement (the DX rule), not a double inversion
    both = read_radiograph(make_dicom(tmp_path / "b.dcm", gradient(np.uint8, 255), photometric="MONOCHROME1",
                                      PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(both.pixels, inverse.pixels, atol=1e-6)


def test_pixel_padding_is_masked_and_ignored_by_the_window(tmp_path):
    pixels = gradient(np.uint16, 1000, shape=(80, 96)) + 1000  # anatomy: 1000..2000
    pixels[:, :8] = 4095  # padding outside the collimated field, brighter than anything
    r = read_radiograph(make_dicom(tmp_path / "pad.dcm", pixels, BitsStored=12, PixelPaddingValue=4095))
    assert np.all(r.pixels[:, :8] == 0.0)
    # the anatomy spans the full range: the padding did not set the contrast
    assert r.pixels[:, 8].max() < 0.02 and r.pixels[:, -1].min() > 0.98


def test_percentile_window_without_voi(tmp_path):
    pixels = gradient(np.uint16, 1000, shape=(80, 96)) + 1000
    pixels[2, 2:6] = 4095  # burned-in text: a handful of extreme pixels
    r = read_radiograph(make_dicom(tmp_path / "text.dcm", pixels, BitsStored=12))
    # min-max would put the middle of the anatomy at (1500-1000)/3095 = 0.16; the percentile window near 0.5
    assert 0.4 < float(np.median(r.pixels[40:, 48])) < 0.6
