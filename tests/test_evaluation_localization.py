"""RSNA mAP against hand-computed cases, including the empty-image convention."""

from __future__ import annotations

import numpy as np
import pytest

from pneumonitor.evaluation.localization import (
    RSNA_IOU_THRESHOLDS,
    boxes_from_heatmap,
    heatmap_threshold_sweep,
    image_precision,
    iou_matrix,
    mean_average_precision,
)


def test_iou_thresholds_are_the_rsna_ones():
    assert RSNA_IOU_THRESHOLDS == (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def test_iou_by_hand():
    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]) == pytest.approx(
        np.array([[50 / 150, 1.0, 0.0]]))


def test_image_precision_by_hand():
    truth = [[0, 0, 10, 10]]
    assert image_precision([[0, 0, 10, 10]], truth) == 1.0
    # IoU 0.5 exactly: a hit at 0.40 and 0.45 only ("greater than" the threshold) -> 2 of 8 thresholds
    assert image_precision([[0, 0, 10, 5]], truth) == pytest.approx(2 / 8)
    # IoU 0.6: hits at 0.40..0.55 (4 thresholds); misses count 1 FP + 1 FN -> precision 0
    assert image_precision([[0, 0, 10, 6]], truth) == pytest.approx(4 / 8)
    # a hit plus a false positive: TP/(TP+FP) = 1/2 at every threshold
    assert image_precision([[0, 0, 10, 10], [50, 50, 60, 60]], truth) == pytest.approx(0.5)
    # two truths, one found: 1/(1+0+1)
    assert image_precision(truth, truth + [[50, 50, 60, 60]]) == pytest.approx(0.5)


def test_confidence_order_decides_matching():
    truth = [[0, 0, 10, 10]]
    good, poor = [0, 0, 10, 10], [0, 0, 10, 7]  # IoU 1.0 and 0.7
    # the confident good box takes the truth: 1 TP + 1 FP at every threshold
    assert image_precision([good, poor], truth, confidences=[0.9, 0.5]) == pytest.approx(0.5)
    # the confident poor box takes it where IoU 0.7 > t (0.40..0.65: 6 thresholds), else the good one does
    assert image_precision([good, poor], truth, confidences=[0.5, 0.9]) == pytest.approx(0.5)
    assert image_precision([poor], truth) == pytest.approx(6 / 8)


def test_empty_image_conventions():
    assert image_precision([], []) is None
    assert image_precision([[0, 0, 5, 5]], []) == 0.0  # any prediction on a truth-free image is wrong
    assert image_precision([], [[0, 0, 5, 5]]) == 0.0  # a missed truth
    preds = [[[0, 0, 10, 10]], [], [[1, 1, 2, 2]]]
    truths = [[[0, 0, 10, 10]], [], []]
    assert mean_average_precision(preds, truths, empty_policy="skip") == (pytest.approx(0.5), 2)
    assert mean_average_precision(preds, truths, empty_policy="one") == (pytest.approx(2 / 3), 3)
    value, count = mean_average_precision([[]], [[]])
    assert np.isnan(value) and count == 0
    with pytest.raises(ValueError):
        mean_average_precision(preds, truths, empty_policy="zero")


def test_boxes_from_heatmap_and_sweep():
    heatmap = np.zeros((40, 40), dtype=np.float32)
    heatmap[5:15, 5:15] = 0.95
    heatmap[8:12, 8:12] = 1.0
    heatmap[25:35, 20:30] = 0.6
    boxes, confidences = boxes_from_heatmap(heatmap, 0.5)
    assert boxes == [[5, 5, 15, 15], [20, 25, 30, 35]]
    assert confidences == pytest.approx([1.0, 0.6])
    assert boxes_from_heatmap(heatmap, 0.7)[0] == [[5, 5, 15, 15]]
    sweep = heatmap_threshold_sweep([heatmap, None], [[[5, 5, 15, 15]], []], thresholds=[0.5, 0.7, 0.99])
    # t=0.5: 1 TP + 1 FP -> 0.5; t=0.7: perfect; t=0.99: only the 4x4 core -> IoU 0.16, all misses
    assert sweep["map"] == pytest.approx([0.5, 1.0, 0.0])
    assert sweep["images"] == [1, 1, 1]  # the image with no truth and no heatmap is skipped
