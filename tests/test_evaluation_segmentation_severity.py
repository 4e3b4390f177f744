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
