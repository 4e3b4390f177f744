"""Hostile and malformed inputs to the readers (issue 16): each is refused with one clear reason before it can
cost memory or produce a result. Every input is generated here with pydicom, Pillow or nibabel."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pneumonitor.reading import UnsupportedInput, read_radiograph

from test_reading import make_dicom


def chest_like(shape=(128, 128)) -> np.ndarray:
    """Two dark lung fields beside a bright spine: structure that stripes would visibly destroy."""
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 200 - 120 * (np.abs(columns / shape[1] - 0.5) > 0.1) * (np.abs(rows / shape[0] - 0.5) < 0.35)
    return image.astype(np.uint8)


@pytest.mark.parametrize(
    "header, needs",
    [
        ({"Columns": 127}, 127 * 128),  # too long for the header: pydicom drops the excess and shears the rows
        ({"Rows": 100}, 100 * 128),
        ({"BitsAllocated": 16, "BitsStored": 12, "HighBit": 11}, 2 * 128 * 128),  # too short
    ],
)
def test_pixel_data_that_disagrees_with_the_header_is_refused(tmp_path, header, needs):
    """Regression (issue 16, item 3): pixel data longer than Rows x Columns x samples x bits decoded to stripes
    that were scored p 1.00, 8/8."""
    path = make_dicom(tmp_path / "striped.dcm", chest_like())
    ds = pydicom.dcmread(path)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    with pytest.raises(UnsupportedInput) as refused:
        read_radiograph(path)
    assert str(refused.value) == (
        f"DICOM file striped.dcm: pixel data could not be decoded: it is {128 * 128} bytes but the header (Rows "
        f"{ds.Rows}, Columns {ds.Columns}, SamplesPerPixel 1, BitsAllocated {ds.BitsAllocated}) needs {needs} ("
        + ("a truncated file, or " if needs > 128 * 128 else "")
        + "header and pixel data disagree)"
    )


def test_consistent_odd_length_pixel_data_is_read(tmp_path):
    """Odd-length native pixel data is padded to even by the writer; that byte is not a disagreement."""
    path = make_dicom(tmp_path / "odd.dcm", chest_like((65, 67)))
    assert len(pydicom.dcmread(path).PixelData) == 65 * 67 + 1
    assert read_radiograph(path).shape == (65, 67)


def nifti_header_only(path, shape, dtype=np.float32, voxel_bytes=0):
    """A NIfTI-1 file whose header declares ``shape`` but that carries only ``voxel_bytes`` of data."""
    import gzip

    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"], header["magic"] = 352, b"n+1"  # a single-file .nii header
    data = header.binaryblock + b"\0" * 4 + b"\1" * voxel_bytes
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_a_10000_px_png_is_refused_before_decoding(tmp_path):
    """Regression (issue 16, item 4): a 129 kB PNG of 10000x10000 px took 8 min 38 s and 5.1 GB end to end."""
    import time

    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("L", (10_000, 10_000)).save(path, optimize=True)
    started = time.perf_counter()
    with pytest.raises(UnsupportedInput, match=r"^image bomb.png is too large \(10000x10000 px = 100.0 MP; at most 50 MP"):
        read_radiograph(path)
    assert time.perf_counter() - started < 1.0  # the header only: decoding alone takes seconds


def test_pixel_cap_is_configurable_and_applies_to_dicom_and_nifti(tmp_path, monkeypatch):
    import nibabel

    from PIL import Image

    monkeypatch.setenv("PNEUMONITOR_MAX_PIXELS", str(100 * 100))
    image = chest_like((128, 128))
    Image.fromarray(image).save(tmp_path / "a.png")
    make_dicom(tmp_path / "a.dcm", image)
    nibabel.save(nibabel.Nifti1Image(image.T.astype(np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    for name, what in (("a.png", "image"), ("a.dcm", "DICOM file"), ("a.nii.gz", "NIfTI file")):
        with pytest.raises(UnsupportedInput, match=rf"^{what} {name} is too large \(128x128 px"):
            read_radiograph(tmp_path / name)
    monkeypatch.setenv("PNEUMONITOR_MAX_PIXELS", str(128 * 128))
    assert all(read_radiograph(tmp_path / name).shape == (128, 128) for name in ("a.png", "a.dcm", "a.nii.gz"))


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_nifti_header_declaring_more_than_the_file_holds_is_refused(tmp_path, name):
    """Regression (issue 16, item 4): a 4.4 kB header declaring a huge volume allocated 3.8 GB before failing."""
    import tracemalloc

    path = nifti_header_only(tmp_path / name, (5000, 5000), voxel_bytes=4096)  # 100 MB declared, 4 kB present
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedInput, match=r"^NIfTI file huge.nii(.gz)? declares 100000352 bytes of header and voxel data but "):
            read_radiograph(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_nifti_header_over_the_pixel_cap_is_refused(tmp_path):
    path = nifti_header_only(tmp_path / "vast.nii.gz", (30000, 20000, 1), dtype=np.uint8)
    with pytest.raises(UnsupportedInput, match=r"^NIfTI file vast.nii.gz is too large \(20000x30000 px = 600.0 MP"):
        read_radiograph(path)


def test_overlay_is_drawn_at_bounded_resolution(tmp_path):
    """Regression (issue 16, item 4): the overlay was drawn at the radiograph's size (most of 5.1 GB at 100 MP)."""
    from PIL import Image

    from pneumonitor.reading import Radiograph
    from pneumonitor.inference.analyzer import OVERLAY_MAX_SIDE, ImageAnalysis, write_image_outputs
    from pneumonitor.severity import assess_severity

    shape = (3000, 4096)
    pixels = np.zeros(shape, np.float32)
    pixels[:, ::2] = 1.0
    lungs = np.zeros(shape, bool)
    lungs[500:2500, 400:1900] = True
    lungs[500:2500, 2200:3700] = True
    severity = assess_severity(0.9, np.ones(shape, np.float32), lungs, classification_threshold=0.5,
                               heatmap_threshold=0.5)
    result = ImageAnalysis(tmp_path / "big.png", "ok", radiograph=Radiograph(pixels, tmp_path / "big.png"),
                           severity=severity, heatmap=np.ones(shape, np.float32))
    files = write_image_outputs(result, tmp_path / "out")
    overlay = np.asarray(Image.open(tmp_path / "out" / files["overlay"]))
    assert overlay.shape == (3000 * OVERLAY_MAX_SIDE // 4096, OVERLAY_MAX_SIDE, 3)
    assert np.asarray(Image.open(tmp_path / "out" / files["lung_mask"])).shape == shape  # masks stay full size
    gray = overlay[1000:1100, 10:150].astype(float)  # outside the lungs: the striped radiograph, area-averaged
    assert np.allclose(gray, 127.5, atol=1.0)


def test_a_dicom_cut_before_its_pixel_data_is_reported_as_truncated(tmp_path):
    """Regression (issue 16, item 7): a truncated DICOM was reported as "has no pixel data"."""
    data = make_dicom(tmp_path / "whole.dcm", chest_like()).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])  # the Pixel Data tag
    with pytest.raises(UnsupportedInput, match=r"^DICOM file cut.dcm is truncated: it has an image header \(Rows, "
                                               r"Columns\) but ends before its pixel data"):
        read_radiograph(tmp_path / "cut.dcm")
