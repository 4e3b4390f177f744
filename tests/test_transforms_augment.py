"""LSNet-Aug transforms: blob implanting and synthetic lung opacities change the image only where they should."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from pneumonitor.transforms import RandBlobImplantd, RandLungOpacityd, lsnet_augmentd


def _lungs(size: int = 96) -> tuple[MetaTensor, MetaTensor]:
    yy, xx = np.mgrid[0:size, 0:size]
    lungs = (((yy - 48) / 30) ** 2 + ((xx - 28) / 14) ** 2 < 1) | (((yy - 48) / 30) ** 2 + ((xx - 68) / 14) ** 2 < 1)
    image = np.where(lungs, 0.15, 0.75).astype(np.float32)
    return MetaTensor(torch.from_numpy(image[None])), MetaTensor(torch.from_numpy(lungs[None].astype(np.float32)))


def test_opacity_brightens_the_lungs_only_and_keeps_the_mask() -> None:
    image, mask = _lungs()
    aug = RandLungOpacityd(keys="image", mask_key="label", prob=1.0, coverage=(0.4, 0.4), strength=(0.8, 0.8))
    aug.set_random_state(0)
    out = aug({"image": image.clone(), "label": mask.clone()})
    delta = (out["image"] - image)[0].numpy()
    lungs = mask[0].numpy() > 0
    assert torch.equal(out["label"], mask)
    assert delta.min() >= -1e-6  # opacities only raise intensity
    assert delta[lungs].max() > 0.3  # dense patches inside the lungs
    far_outside = np.ones_like(lungs)
    far_outside[10:86, 8:90] = False
    assert np.abs(delta[far_outside]).max() < 1e-3  # nothing away from the lungs
    assert (delta[lungs] > 0.05).mean() > 0.1  # a real fraction of the lung area


def test_opacity_probability_zero_is_identity() -> None:
    image, mask = _lungs()
    out = RandLungOpacityd(keys="image", prob=0.0)({"image": image.clone(), "label": mask})
    assert torch.equal(out["image"], image)


def test_blobs_change_the_image_not_the_mask_and_stay_in_range() -> None:
    image, mask = _lungs()
    aug = RandBlobImplantd(keys="image", prob=1.0, num_blobs=(3, 3), num_tubes=(1, 1), opacity=(1.0, 1.0))
    aug.set_random_state(1)
    out = aug({"image": image.clone(), "label": mask.clone()})
    changed = (out["image"] - image).abs() > 0.05
    assert torch.equal(out["label"], mask)
    assert 0.001 < changed.float().mean() < 0.5
    assert float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1


def test_blobs_are_reproducible_with_a_seed() -> None:
    image, mask = _lungs()
    outs = []
    for _ in range(2):
        aug = RandBlobImplantd(keys="image", prob=1.0)
        aug.set_random_state(7)
        outs.append(aug({"image": image.clone(), "label": mask})["image"])
    assert torch.equal(outs[0], outs[1])


def test_full_chain_keeps_mask_values_and_shapes() -> None:
    image, mask = _lungs()
    mask[0, 40:44, 20:24] = -1  # an ignore label survives nearest-neighbour geometry
    chain = lsnet_augmentd(image_size=96, zoom_prob=1, translate_prob=1, rotate_prob=1, flip_prob=1, gamma_prob=1,
                           blob_prob=1, opacity_prob=1)
    chain.set_random_state(3)
    out = chain({"image": image.clone(), "label": mask.clone()})
    assert out["image"].shape == (1, 96, 96) and out["label"].shape == (1, 96, 96)
    assert set(np.unique(out["label"].numpy())) <= {-1.0, 0.0, 1.0}
    assert not torch.equal(out["image"], image)


def test_dlnet_augment_flips_image_and_target_together_and_stays_in_range() -> None:
    from pneumonitor.transforms import dlnet_augmentd

    image = torch.zeros(1, 64, 64)
    image[:, 8:24, 4:16] = 1.0  # a bright region on the image left ...
    target = torch.zeros(1, 8, 8)
    target[:, 1:3, 0:2] = 1.0  # ... and its localization target (stride 8)
    flips = 0
    for seed in range(12):
        chain = dlnet_augmentd(gamma_prob=1.0, blur_prob=1.0, lowres_prob=1.0, noise_prob=1.0, histogram_prob=1.0)
        chain.set_random_state(seed)
        out = chain({"image": MetaTensor(image.clone()), "target": MetaTensor(target.clone())})
        img, tgt = np.asarray(out["image"]), np.asarray(out["target"])
        assert img.shape == (1, 64, 64) and tgt.shape == (1, 8, 8)
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert set(np.unique(tgt)) == {0.0, 1.0}  # the target is only flipped, never blurred
        image_right = img[0, 8:24, 48:60].mean() > img[0, 8:24, 4:16].mean()
        target_right = tgt[0, 1:3, 6:8].sum() > 0
        assert image_right == target_right
        flips += int(target_right)
    assert 0 < flips < 12
