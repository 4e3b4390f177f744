"""DLNet localization targets: boxes/mask -> dilated, blurred target at the maps' resolution, and has_target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from pneumonitor.transforms import LocalizationTarget, LocalizationTargetd, boxes_to_map, soften_target


def test_boxes_are_rescaled_to_the_map_grid() -> None:
    # a box covering the image's left half, rows 16-31 of a 64x128 image, on an 8x16 map
    region = boxes_to_map([[0, 16, 64, 32]], image_shape=(64, 128), map_shape=(8, 16))
    expected = np.zeros((8, 16), dtype=bool)
    expected[2:4, 0:8] = True
    np.testing.assert_array_equal(region, expected)


def test_partially_covered_cells_count_and_boxes_are_clipped() -> None:
    region = boxes_to_map([[5, 5, 6, 6], [60, 60, 80, 80]], image_shape=(64, 64), map_shape=(8, 8))
    assert region[0, 0] and region[7, 7] and region.sum() == 2


def test_dilation_is_5x5_then_blur_keeps_range() -> None:
    point = np.zeros((15, 15), dtype=bool)
    point[7, 7] = True
    dilated = soften_target(point, dilation=5, sigma=0)
    assert dilated.sum() == 25 and dilated[5:10, 5:10].all()
    soft = soften_target(point, dilation=5, sigma=1.0)
    assert soft.min() >= 0 and soft.max() <= 1
    assert soft[7, 7] > 0.5 and 0 < soft[7, 10] < soft[7, 9]  # blurred edge decreases outward


def test_empty_boxes_give_zero_target() -> None:
    target, region = LocalizationTarget(map_size=8)((64, 64), boxes=[])
    assert target.shape == (1, 8, 8) and float(target.sum()) == 0 and float(region.sum()) == 0


def test_mask_wins_over_boxes(tmp_path) -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[40:48, 40:48] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    item = {"image": MetaTensor(torch.zeros(1, 64, 64)), "label": 1, "boxes": [[0, 0, 8, 8]], "mask": str(path)}
    out = LocalizationTargetd(keys="image", map_size=8, dilation=1, sigma=0)(item)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[5, 5] = 1
    np.testing.assert_array_equal(out["region"][0].numpy(), expected)
    assert "boxes" not in out and "mask" not in out  # removed: they would not collate


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"label": 1, "boxes": [[0, 0, 8, 8]]}, 1.0),  # localized positive
        ({"label": 1, "boxes": []}, 0.0),  # positive, location unknown: classification only
        ({"label": 0, "boxes": []}, 1.0),  # negative: known empty target
        ({"label": 1, "boxes": [], "has_localization": 1}, 1.0),  # the datalist's explicit flag wins
        ({"label": 0, "boxes": [], "has_localization": 0}, 0.0),
    ],
)
def test_has_target(extra: dict, expected: float) -> None:
    item = {"image": MetaTensor(torch.zeros(1, 32, 32)), "mask": "", **extra}
    out = LocalizationTargetd(keys="image", map_size=4)(item)
    assert float(out["has_target"]) == expected
    assert out["target"].shape == (1, 4, 4)


def test_missing_mask_file_is_a_clear_error(tmp_path) -> None:
    item = {"image": MetaTensor(torch.zeros(1, 32, 32)), "label": 1, "mask": str(tmp_path / "absent.png")}
    with pytest.raises(FileNotFoundError, match="absent.png"):
        LocalizationTargetd(keys="image", map_size=4)(item)


def test_box_target_is_dilated_in_image_pixels_and_pooled_as_area_fraction() -> None:
    # a 16x16 px box on a 64x64 image, 8x8 map: the 5x5 pixel kernel grows it to 20x20 px (2 px a side), not by
    # 2 map cells (16 px) a side as a map-grid dilation would
    target, region = LocalizationTarget(map_size=8, dilation=5, sigma=0)((64, 64), boxes=[[24, 24, 40, 40]])
    covered_pixels = float(target.sum()) * 64  # each map cell is 8x8 = 64 px
    assert covered_pixels == pytest.approx(20 * 20)
    assert float(target.max()) == 1.0 and 0 < float(target[0, 2, 2]) < 1  # partially covered edge cells
    assert float(region.sum()) == 4  # the 2x2 cells fully inside


def test_mask_target_is_neither_dilated_nor_blurred() -> None:
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[10:30, 5:17] = 1
    target, _ = LocalizationTarget(map_size=8, dilation=5, sigma=2.0)((64, 64), mask=mask)
    assert float(target.sum()) * 64 == pytest.approx(mask.sum())


def test_lung_region_is_pooled_and_flagged(tmp_path) -> None:
    lungs = np.zeros((32, 32), dtype=np.uint8)  # any size: only the field of view must match the image's
    lungs[:, :16] = 255
    path = tmp_path / "lungs.png"
    Image.fromarray(lungs).save(path)
    item = {"image": MetaTensor(torch.zeros(1, 64, 64)), "label": 1, "mask": "", "lung_region": str(path)}
    out = LocalizationTargetd(keys="image", map_size=8)(item)
    assert out["lung"].shape == (1, 8, 8) and float(out["has_lung"]) == 1.0
    np.testing.assert_allclose(out["lung"][0, :, :4].numpy(), 1.0)
    np.testing.assert_allclose(out["lung"][0, :, 4:].numpy(), 0.0)
    assert "lung_region" not in out
    no_lungs = LocalizationTargetd(keys="image", map_size=8)({**item, "lung_region": ""})
    assert float(no_lungs["has_lung"]) == 0.0 and float(no_lungs["lung"].sum()) == 0.0


def test_a_perfect_fit_of_the_target_scores_the_radiologist_masks_as_the_masks_do(shared_data) -> None:
    """The heatmap that equals the target (upsampled as inference does, thresholded at half coverage) must give
    the radiologist masks' own 0-8 scores: the target's area is the lesion's area (a map-grid dilation scored
    these images 6.25 on average against the masks' 3.7)."""
    import pandas as pd

    from pneumonitor.datasets.covid_collection import PNEUMONIA_CLASSES
    from pneumonitor.networks.dlnet import maps_to_heatmap
    from pneumonitor.severity import lung_score, pneumonia_ratio

    root = shared_data / "covid-chestxray-dataset"
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    truth, fitted = [], []
    for folder in manifest.loc[manifest.gb_masks != "", "gb_masks"]:
        folder = root / folder
        lungs = [folder / "right_lung.png", folder / "left_lung.png"]
        if not all(path.is_file() for path in lungs):
            continue
        right, left = (np.asarray(Image.open(path).convert("L")) > 0 for path in lungs)
        pneumonia = np.zeros(right.shape, dtype=bool)
        for name in PNEUMONIA_CLASSES:
            if (folder / f"{name}.png").is_file():
                pneumonia |= np.asarray(Image.open(folder / f"{name}.png").convert("L")) > 0
        target, _ = LocalizationTarget(map_size=28, dilation=5, sigma=2.0)(pneumonia.shape, mask=pneumonia)
        heatmap = maps_to_heatmap(target[None], pneumonia.shape)[0, 0].numpy()
        predicted = heatmap >= 0.5
        truth.append(sum(lung_score(pneumonia_ratio(pneumonia, lung)) for lung in (right, left)))
        fitted.append(sum(lung_score(pneumonia_ratio(predicted, lung)) for lung in (right, left)))
    truth, fitted = np.array(truth), np.array(fitted)
    assert len(truth) >= 60
    assert abs(fitted.mean() - truth.mean()) < 0.2  # measured: 3.60 vs 3.62 (77 images)
    assert (fitted == truth).mean() > 0.9  # measured: 97 % identical scores
