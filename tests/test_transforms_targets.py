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
