import math

import numpy as np
import pytest

from pneumonitor.severity import (
    InsufficientLungs,
    assess_severity,
    lung_label_image,
    lung_score,
    pneumonia_ratio,
    split_lungs,
    LEFT_LUNG_VALUE,
    RIGHT_LUNG_VALUE,
)


def two_lungs(height=100, width=120):
    """Right lung (patient) on the image left: columns 10-49; left lung on the image right: columns 70-109."""
    mask = np.zeros((height, width), bool)
    mask[10:90, 10:50] = True  # 80 x 40 = 3200 px
    mask[20:90, 70:110] = True  # 70 x 40 = 2800 px
    return mask


@pytest.mark.parametrize(
    "ratio,score",
    [(0.0, 0), (1e-6, 1), (24.99, 1), (25.0, 2), (49.99, 2), (50.0, 3), (74.99, 3), (75.0, 4), (100.0, 4)],
)
def test_lung_score_bin_edges(ratio, score):
    assert lung_score(ratio) == score


@pytest.mark.parametrize("bad", [math.nan, -0.1, 100.5])
def test_lung_score_rejects_invalid(bad):
    with pytest.raises(ValueError):
        lung_score(bad)


def test_ratio_known_areas():
    lungs = np.zeros((10, 10), bool)
    lungs[:, :8] = True  # 80 px
    pneumonia = np.zeros((10, 10), bool)
    pneumonia[:2, :] = True  # 20 px, 16 of them inside the lungs
    assert pneumonia_ratio(pneumonia, lungs) == pytest.approx(20.0)


def test_ratio_of_empty_lung_is_nan():
    assert math.isnan(pneumonia_ratio(np.ones((5, 5)), np.zeros((5, 5))))


def test_split_assigns_patient_right_to_image_left():
    mask = two_lungs()
    right, left = split_lungs(mask)
    assert right.sum() == 3200 and left.sum() == 2800
    assert right[:, 60:].sum() == 0 and left[:, :60].sum() == 0


def test_split_drops_noise_and_cuts_merged_lungs():
    mask = two_lungs()
    mask[50:52, 50:70] = True  # a bridge merging both lungs across the mediastinum
    mask[0:2, 0:2] = True  # stray pixels
    right, left = split_lungs(mask)
    assert abs(int(right.sum()) - 3200) <= 40 and abs(int(left.sum()) - 2800) <= 40
    assert not right[0:2, 0:2].any()
    assert right[:, 70:].sum() == 0 and left[:, :50].sum() == 0


def test_split_empty_mask():
    right, left = split_lungs(np.zeros((20, 20)))
    assert not right.any() and not left.any()


@pytest.mark.parametrize(
    "rows_right,rows_left,expected",
    [
        # pneumonia covering the first N rows of each lung; right lung has 80 rows, left 70
        (20, 0, (25.0, 0.0, 2, 0)),
        (40, 35, (50.0, 50.0, 3, 3)),
        (60, 70, (75.0, 100.0, 4, 4)),
        (1, 17, (1.25, 24.29, 1, 1)),
    ],
)
def test_assess_severity_per_lung(rows_right, rows_left, expected):
    lungs = two_lungs()
    heatmap = np.zeros(lungs.shape, np.float32)
    heatmap[10 : 10 + rows_right, 10:50] = 0.9
    heatmap[20 : 20 + rows_left, 70:110] = 0.95
    result = assess_severity(0.9, heatmap, lungs)
    ratio_right, ratio_left, score_right, score_left = expected
    assert result.ratio_right == pytest.approx(ratio_right, abs=0.01)
    assert result.ratio_left == pytest.approx(ratio_left, abs=0.01)
    assert (result.score_right, result.score_left) == (score_right, score_left)
    assert result.score_total == score_right + score_left
    total = 100 * (rows_right * 40 + rows_left * 40) / 6000
    assert result.ratio_total == pytest.approx(total)


def test_negative_image_has_zero_ratio_even_with_heatmap():
    lungs = two_lungs()
    result = assess_severity(0.61, np.ones(lungs.shape, np.float32), lungs)
    assert not result.positive
    assert (result.ratio_total, result.score_total) == (0.0, 0)
    assert not result.pneumonia_mask.any()


def test_thresholds_are_configurable():
    lungs = two_lungs()
    heatmap = np.full(lungs.shape, 0.7, np.float32)
    assert assess_severity(0.5, heatmap, lungs).score_total == 0
    result = assess_severity(0.5, heatmap, lungs, classification_threshold=0.4, heatmap_threshold=0.6)
    assert result.score_total == 8


def test_heatmap_outside_lungs_is_ignored():
    lungs = two_lungs()
    heatmap = np.zeros(lungs.shape, np.float32)
    heatmap[:, 50:70] = 1.0  # mediastinum only
    assert assess_severity(0.99, heatmap, lungs).ratio_total == 0.0


def test_missing_lung_is_reported():
    lungs = two_lungs()
    lungs[:, 60:] = False
    with pytest.raises(InsufficientLungs, match="no left lung"):
        assess_severity(0.9, np.zeros(lungs.shape), lungs)
    with pytest.raises(InsufficientLungs, match="no lung"):
        assess_severity(0.9, np.zeros(lungs.shape), np.zeros(lungs.shape))


def test_nan_heatmap_is_refused():
    lungs = two_lungs()
    heatmap = np.zeros(lungs.shape, np.float32)
    heatmap[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        assess_severity(0.9, heatmap, lungs)


def test_lung_label_image_values():
    right, left = split_lungs(two_lungs())
    labels = lung_label_image(right, left)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, LEFT_LUNG_VALUE, RIGHT_LUNG_VALUE}
    assert (labels[:, :60] == LEFT_LUNG_VALUE).sum() == 0


def test_pneumonia_region_is_the_heatmap_inside_the_lungs_of_a_positive_image_only():
    from pneumonitor.severity import pneumonia_region

    heatmap = np.array([[0.9, 0.9], [0.2, 0.9]], dtype=np.float32)
    lungs = np.array([[True, False], [True, True]])
    assert pneumonia_region(0.7, heatmap, lungs, 0.5, 0.8).tolist() == [[True, False], [False, True]]
    assert not pneumonia_region(0.4, heatmap, lungs, 0.5, 0.8).any()  # negative image: empty
    assert pneumonia_region(0.5, heatmap, lungs, 0.5, 0.8).dtype == bool  # at the threshold: positive


@pytest.mark.parametrize("extent,ratio,score", [
    (-1.0, 0.0, 0), (0.5, 0.0, 0), (0.51, 0.25, 1), (1.0, 12.5, 1), (1.49, 24.75, 1), (1.5, 25.0, 2),
    (2.0, 37.5, 2), (3.0, 62.5, 3), (3.5, 75.0, 4), (4.0, 87.5, 4), (9.0, 100.0, 4),
])
def test_extent_ratio_is_the_middle_of_the_bin_the_extent_rounds_to(extent, ratio, score):
    from pneumonitor.severity import extent_ratio

    assert extent_ratio(extent) == pytest.approx(ratio)
    assert lung_score(extent_ratio(extent)) == score


def test_top_fraction_region_takes_the_highest_heatmap_with_an_exact_area_whatever_the_ties():
    from pneumonitor.severity import top_fraction_region

    lung = two_lungs() & (np.arange(120) < 60)[None, :]  # the right lung only: 3200 px
    heatmap = np.zeros(lung.shape, np.float32)
    heatmap[10:30, 10:50] = 0.9  # 800 px, 25 % of the lung
    heatmap[50:60, 10:50] = 0.5  # 400 px more
    region = top_fraction_region(heatmap, lung, 25.0)
    assert region.sum() == 800 and region[10:30, 10:50].all()
    region = top_fraction_region(heatmap, lung, 50.0)  # 1600 px: the 1200 px above 0, then 400 of the zeros
    assert region.sum() == 1600 and region[10:30, 10:50].all() and region[50:60, 10:50].all()
    assert not (region & ~lung).any()
    tie_break = np.zeros(lung.shape, np.float32)
    tie_break[80:90, 10:50] = 1.0  # among equal heatmap values the tie-break decides
    assert top_fraction_region(heatmap, lung, 50.0, tie_break)[80:90, 10:50].all()
    assert not top_fraction_region(heatmap, lung, 0.0).any()


def test_assess_severity_with_an_extent_map_reports_each_lungs_extent_as_its_ratio_and_score():
    lungs = two_lungs()
    heatmap = np.random.default_rng(0).random(lungs.shape).astype(np.float32)
    extent_map = np.zeros(lungs.shape, np.float32)
    extent_map[:, :60] = 2.0  # right lung: extent 2 -> 37.5 %, score 2
    extent_map[:, 60:] = 3.6  # left lung: extent 3.6 -> 77.5 %, score 4
    result = assess_severity(0.9, heatmap, lungs, classification_threshold=0.5, extent_map=extent_map)
    assert result.ratio_right == pytest.approx(37.5, abs=0.05) and result.ratio_left == pytest.approx(77.5, abs=0.05)
    assert (result.score_right, result.score_left, result.score_total) == (2, 4, 6)
    # the pneumonia is where the heatmap is highest in each lung
    right = result.right_lung
    assert heatmap[result.pneumonia_mask & right].min() >= heatmap[right & ~result.pneumonia_mask].max()
    # the heatmap threshold plays no part; a negative image has none
    same = assess_severity(0.9, heatmap, lungs, 0.5, heatmap_threshold=0.99, extent_map=extent_map)
    assert np.array_equal(same.pneumonia_mask, result.pneumonia_mask)
    negative = assess_severity(0.4, heatmap, lungs, classification_threshold=0.5, extent_map=extent_map)
    assert negative.score_total == 0 and not negative.pneumonia_mask.any()
    with pytest.raises(ValueError, match="extent map"):
        assess_severity(0.9, heatmap, lungs, extent_map=extent_map[:, :10])
    with pytest.raises(ValueError, match="NaN"):
        assess_severity(0.9, heatmap, lungs, extent_map=np.full(lungs.shape, np.nan))
