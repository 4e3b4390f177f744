import numpy as np
import pytest
import torch

from pneumonitor.transforms import (
    CLAHE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLAHEd,
    ImageNetNormalize,
    LoadMask,
    LoadRadiographd,
    dlnet_preprocess,
    dlnet_preprocessd,
    lsnet_preprocess,
)


def low_contrast_image(shape=(1, 128, 160)):
    rng = np.random.default_rng(0)
    return (0.4 + 0.1 * rng.random(shape)).astype(np.float32)


def test_clahe_increases_contrast_and_stays_in_range():
    image = low_contrast_image()
    out = CLAHE(clip_limit=0.02, tile_grid=(4, 4))(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * image.std()


def test_clahe_clip_limit_matters_and_tensor_in_tensor_out():
    image = torch.from_numpy(low_contrast_image())
    weak = CLAHE(clip_limit=0.002)(image)
    strong = CLAHE(clip_limit=0.05)(image)
    assert isinstance(weak, torch.Tensor)
    assert float(strong.std()) > float(weak.std())
    with pytest.raises(ValueError):
        CLAHE(clip_limit=0)


def test_clahed_dict():
    d = CLAHEd(keys="image")({"image": low_contrast_image(), "label": 1})
    assert d["label"] == 1 and d["image"].std() > 0.1


def test_imagenet_normalize_replicates_gray():
    gray = torch.full((1, 4, 4), 0.5)
    out = ImageNetNormalize()(gray)
    assert out.shape == (3, 4, 4)
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError):
        ImageNetNormalize()(torch.zeros(2, 4, 4))


@pytest.mark.parametrize("size", [448, 256])
def test_presets_shapes(size):
    image = torch.from_numpy(low_contrast_image((1, 300, 250)))
    dl = dlnet_preprocess(size)(image)
    ls = lsnet_preprocess(size)(image)
    assert tuple(dl.shape) == (3, size, size) and tuple(ls.shape) == (1, size, size)
    assert abs(float(ls.mean())) < 1e-4 and abs(float(ls.std()) - 1) < 1e-3


def test_load_and_preprocess_dict_on_sample(dicom_samples):
    chain = dlnet_preprocessd(keys="image", image_size=224)
    d = chain(LoadRadiographd(keys="image")({"image": str(dicom_samples[0])}))
    assert tuple(d["image"].shape) == (3, 224, 224)
    assert d["image"].meta["sop_instance_uid"]


def test_load_mask_with_ignore_value(tmp_path):
    from PIL import Image

    array = np.zeros((10, 12), np.uint8)
    array[2:5, 3:6] = 255
    array[0, 0] = 127
    Image.fromarray(array).save(tmp_path / "m.png")
    mask = LoadMask(ignore_value=127)(tmp_path / "m.png")
    assert tuple(mask.shape) == (1, 10, 12)
    assert float(mask.sum()) == 9 - 1 and float(mask[0, 0, 0]) == -1.0


def test_resize_radiograph_area_when_shrinking_bilinear_when_enlarging():
    from pneumonitor.transforms import ResizeRadiograph

    image = torch.arange(16.0).reshape(1, 4, 4)
    small = ResizeRadiograph(2)(image)
    # area: each output pixel is the mean of a 2x2 block (exact box-filter anti-aliasing)
    np.testing.assert_allclose(np.asarray(small)[0], [[2.5, 4.5], [10.5, 12.5]])
    large = ResizeRadiograph(8)(image)
    assert tuple(large.shape) == (1, 8, 8)
    # bilinear keeps a smooth ramp (area/nearest would repeat values in 2x2 blocks)
    assert len(np.unique(np.asarray(large)[0, 0])) > 4


def test_a_batch_of_mixed_formats_collates(dicom_samples, tmp_path):
    """DICOMs with and without PatientOrientation, a PNG and a NIfTI load into one batch (MONAI's collate takes the
    meta key by key: a missing key or lists of different lengths used to fail training on mixed PACS data)."""
    import nibabel
    from monai.data import list_data_collate
    from monai.transforms import Compose, Resized
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 100), dtype=np.uint8)).save(tmp_path / "plain.png")
    nibabel.save(nibabel.Nifti1Image(rng.random((100, 80)).astype(np.float32), np.eye(4)), str(tmp_path / "image.nii.gz"))
    with_orientation = [p for p in dicom_samples if p.name == "dx_image.dcm"]
    without = [p for p in dicom_samples if p.name.startswith("1.3.6.1.4.1.11129")]
    paths = with_orientation + without + [tmp_path / "plain.png", tmp_path / "image.nii.gz"]
    load = Compose([LoadRadiographd(keys="image"), Resized(keys="image", spatial_size=(32, 32))])
    items = [load({"image": str(p)}) for p in paths]
    metas = [item["image"].meta for item in items]
    assert len({frozenset(m) for m in metas}) == 1, "every format gets the same meta keys"
    assert metas[0]["patient_orientation"] == "L\\F" and metas[1]["patient_orientation"] == ""
    assert np.isnan(metas[2]["pixel_spacing"]).all() and metas[0]["pixel_spacing"].shape == (2,)

    batch = list_data_collate(items)

    assert batch["image"].shape == (4, 1, 32, 32)
    assert list(batch["image"].meta["patient_orientation"]) == ["L\\F", "", "", ""]
