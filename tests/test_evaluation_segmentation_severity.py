"""Dice/Jaccard (empty masks, ignore pixels) and severity agreement against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pneumonitor.evaluation.segmentation import mean_sd, overlap
from pneumonitor.evaluation.severity_agreement import agreement, confusion_matrix, round_scores


def test_dice_and_jaccard_by_hand():
    reference = np.zeros((10, 10), dtype=np.uint8)
    reference[:, :4] = 255  # 40 px
    pred = np.zeros((10, 10), dtype=np.uint8)
    pred[:, 2:6] = 128  # 40 px, 20 shared; nonzero = foreground
    dice, jaccard = overlap(pred, reference)
    assert dice == pytest.approx(2 * 20 / 80)
    assert jaccard == pytest.approx(20 / 60)


def test_empty_masks():
    empty = np.zeros((8, 8))
    full = np.ones((8, 8))
    assert overlap(empty, empty) == (1.0, 1.0)  # both empty: agreement
    assert overlap(full, empty) == (0.0, 0.0)  # empty reference, something predicted
    assert overlap(empty, full) == (0.0, 0.0)


def test_ignore_pixels_and_resizing():
    reference = np.zeros((10, 10), dtype=np.uint8)
    reference[:, :5] = 255
    reference[:, 5:7] = 127  # V7 "ignore"
    pred = np.zeros((10, 10), dtype=np.uint8)
    pred[:, :5] = 255
    assert overlap(pred, reference, ignore=reference == 127) == pytest.approx((1.0, 1.0))
    assert overlap(pred, reference)[0] == pytest.approx(2 * 50 / 120)  # 127 counted as lung without ignore
    big = np.kron(pred, np.ones((2, 2), dtype=np.uint8))  # prediction at twice the size
    assert overlap(big, reference, ignore=reference == 127) == pytest.approx((1.0, 1.0))


def test_mean_sd():
    summary = mean_sd([0.8, 0.9, 1.0, float("nan")])
    assert (summary.mean, summary.n) == (pytest.approx(0.9), 3)
    assert summary.sd == pytest.approx(0.1)
    assert summary.format() == "0.90 ± 0.10"
    assert mean_sd([]).n == 0


def test_agreement_by_hand():
    reference = [0, 2, 4, 6, 8]
    perfect = agreement(reference, reference)
    assert perfect.pearson_r == pytest.approx(1.0) and perfect.r2 == pytest.approx(1.0) and perfect.mae == 0
    biased = agreement([r + 2 for r in reference], reference)
    # r stays 1, but R^2 = 1 - 5*4 / 40 = 0.5 and MAE = 2
    assert biased.pearson_r == pytest.approx(1.0)
    assert biased.r2 == pytest.approx(0.5) and biased.mae == pytest.approx(2.0)
    assert biased.slope == pytest.approx(1.0) and biased.intercept == pytest.approx(2.0)
    noisy = agreement([1, 1, 5, 5, 8], reference)
    expected_r = np.corrcoef([1, 1, 5, 5, 8], reference)[0, 1]
    assert noisy.pearson_r == pytest.approx(expected_r) and 0 < noisy.p_value < 0.1
    assert noisy.r_squared_fit == pytest.approx(expected_r**2)
    assert agreement([1, float("nan")], [1, 2]).n == 1


def test_confusion_matrix_rounds_rater_means():
    assert round_scores([0.3, 2.5, 3.49, 8.7, -1]).tolist() == [0, 3, 3, 8, 0]
    matrix = confusion_matrix([0, 3, 3, 8], [0.3, 2.7, 3.3, 7.6])
    assert matrix.shape == (9, 9) and matrix.sum() == 4
    assert matrix[0, 0] == 1 and matrix[3, 3] == 2 and matrix[8, 8] == 1


def test_agreement_by_source_keeps_a_source_the_pooled_r_hides():
    from pneumonitor.evaluation.severity_agreement import agreement_by_source

    # source "seen" tracks the experts exactly; "new" does not track them at all; pooled, r is still high
    reference = [0, 2, 4, 6, 8, 3, 4, 5, 6]
    predicted = [0, 2, 4, 6, 8, 5, 4, 5, 3]
    sources = ["seen"] * 5 + ["new"] * 4
    assert agreement(predicted, reference).pearson_r > 0.7
    table = agreement_by_source(predicted, reference, sources)
    assert list(table) == ["new", "seen"]
    assert table["seen"]["pearson_r"] == pytest.approx(1.0) and table["seen"]["mae"] == 0
    assert table["new"]["n"] == 4 and table["new"]["pearson_r"] == pytest.approx(np.corrcoef([5, 4, 5, 3], [3, 4, 5, 6])[0, 1])
    assert table["new"]["mae"] == pytest.approx((2 + 0 + 0 + 3) / 4) and table["new"]["bias"] == pytest.approx(-1 / 4)
    # the baseline predicts the source's own mean (4.5): |3-4.5|, |4-4.5|, |5-4.5|, |6-4.5|
    assert table["new"]["reference_mean"] == pytest.approx(4.5) and table["new"]["mae_reference_mean"] == pytest.approx(1.0)
    # a missing source reads "unknown"; a source with no finite pair is left out
    assert list(agreement_by_source([1, float("nan")], [1, 2], [None, "b"])) == ["unknown"]
    with pytest.raises(ValueError, match="sources"):
        agreement_by_source([1, 2], [1, 2], ["a"])


def test_reference_area_region_measures_where_the_heatmap_points_not_how_much():
    from pneumonitor.evaluation.segmentation import reference_area_region

    right = np.zeros((20, 20), bool)
    right[2:18, 1:9] = True  # 128 pixels
    left = np.zeros((20, 20), bool)
    left[2:18, 11:19] = True
    reference = np.zeros((20, 20), bool)
    reference[2:6, 1:9] = True  # a quarter of the right lung, nothing of the left
    heatmap = np.zeros((20, 20), np.float32)
    heatmap[2:6, 1:9] = 0.2  # a faint heatmap on the lesion: a threshold of 0.5 would call nothing there
    heatmap[10:18, 11:19] = 0.9  # ... and a strong one in the healthy left lung
    region = reference_area_region(heatmap, right, left, reference)
    # the right lung gets 32 pixels at its highest heatmap (the lesion), the left lung none (its reference share is 0)
    assert np.array_equal(region, reference)
    assert overlap(region, reference)[0] == pytest.approx(1.0)
    # pointing at the wrong place at the right area scores low
    elsewhere = np.zeros((20, 20), np.float32)
    elsewhere[14:18, 1:9] = 0.9
    misplaced = reference_area_region(elsewhere, right, left, reference)
    assert misplaced.sum() == 32 and overlap(misplaced, reference)[0] == pytest.approx(0.0)
    # a reference stored at another size is resized to the lungs
    big = np.kron(reference, np.ones((2, 2), bool))
    assert np.array_equal(reference_area_region(heatmap, right, left, big), reference)
