"""Localization metrics (paper Sec. V-B, Fig. 8a): boxes from thresholded heatmaps and the RSNA challenge mAP.

* Predicted boxes: the heatmap (values in [0, 1]) is thresholded (``heatmap >= t``), and each 8-connected region gives
  its tight box (``pneumonitor.datasets.bounding_boxes.boxes_from_mask`` with no merging); a box's confidence is the maximum
  heatmap value inside its region. Boxes are ``[x0, y0, x1, y1]`` end-exclusive pixels.
* Per image, at each IoU threshold t in 0.40, 0.45, ..., 0.75: predictions, by decreasing confidence, are matched to
  the unmatched ground-truth box of highest IoU when that IoU is greater than t (TP); unmatched predictions are FP,
  unmatched ground truth FN; ``precision(t) = TP / (TP + FP + FN)``. The image's precision is the mean over t, and
  mAP is the mean over images.
* Images with no ground-truth box and no predicted box have no defined precision (0/0). Convention, as in the RSNA
  challenge's public scoring kernel: such images are SKIPPED (not in the mean) — ``empty_policy="skip"``.
  ``empty_policy="one"`` counts them as 1 (a correct empty answer) instead. An image with ground truth and no
  prediction scores 0, and so does an image with predictions and no ground truth.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumonitor.datasets.bounding_boxes import boxes_from_mask

RSNA_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.40, 0.751, 0.05), 2))
HEATMAP_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.50, 0.901, 0.05), 2))
EMPTY_POLICIES = ("skip", "one")


def boxes_from_heatmap(heatmap: np.ndarray, threshold: float) -> tuple[list[list[int]], list[float]]:
    """Tight boxes of the regions of ``heatmap >= threshold`` and their confidences (max heatmap inside).

    Args:
        heatmap: [H, W] float in [0, 1].
        threshold: in [0, 1].

    Returns:
        (boxes, confidences), in the same order.
    """
    from scipy import ndimage

    heatmap = np.asarray(heatmap, dtype=np.float32)
    binary = heatmap >= threshold
    boxes = boxes_from_mask(binary, closing_radius=0)
    if not boxes:
        return [], []
    labels, _ = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    confidences = []
    for x0, y0, x1, y1 in boxes:
        window = labels[y0:y1, x0:x1]
        # the region that spans exactly this box (its label is the most frequent one in the window)
        region = np.bincount(window[window > 0]).argmax()
        confidences.append(float(heatmap[y0:y1, x0:x1][window == region].max()))
    return boxes, confidences


def iou_matrix(pred: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> np.ndarray:
    """[P, G] IoU of end-exclusive ``[x0, y0, x1, y1]`` boxes, in float64.

    (``monai.data.box_utils.box_iou`` computes in float32, which moves IoUs that sit exactly on a threshold, e.g.
    0.6, to either side of it; the RSNA rule "IoU greater than t" needs exact values.)
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 1, 4)
    g = np.asarray(truth, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]), 0, None)
    height = np.clip(np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]), 0, None)
    intersection = width * height
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    union = area_p + area_g - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def image_precision(
    pred: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    confidences: Sequence[float] | None = None,
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float | None:
    """RSNA precision of one image averaged over IoU thresholds; None when there is no box at all (0/0)."""
    n_pred, n_truth = len(pred), len(truth)
    if n_pred == 0 and n_truth == 0:
        return None
    if n_pred == 0 or n_truth == 0:
        return 0.0
    order = np.argsort(-np.asarray(confidences if confidences is not None else np.ones(n_pred)), kind="stable")
    ious = iou_matrix([pred[i] for i in order], truth)
    precisions = []
    for threshold in iou_thresholds:
        matched = np.zeros(n_truth, dtype=bool)
        tp = 0
        for row in ious:
            candidates = np.where(~matched & (row > threshold), row, -1.0)
            best = int(np.argmax(candidates))
            if candidates[best] > threshold:
                matched[best] = True
                tp += 1
        fp, fn = n_pred - tp, n_truth - tp
        precisions.append(tp / (tp + fp + fn))
    return float(np.mean(precisions))


def mean_average_precision(
    preds: Sequence[Sequence[Sequence[float]]],
    truths: Sequence[Sequence[Sequence[float]]],
    confidences: Sequence[Sequence[float]] | None = None,
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    empty_policy: str = "skip",
) -> tuple[float, int]:
    """RSNA mAP over images (see the module doc for the empty-image convention).

    Returns:
        (mAP, number of images in the mean); mAP is NaN when no image counts.
    """
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} images")
    values = []
    for index, (pred, truth) in enumerate(zip(preds, truths)):
        conf = None if confidences is None else confidences[index]
        value = image_precision(pred, truth, conf, iou_thresholds)
        if value is None:
            if empty_policy == "skip":
                continue
            value = 1.0
        values.append(value)
    return (float(np.mean(values)) if values else float("nan")), len(values)


def heatmap_threshold_sweep(
    heatmaps: Sequence[np.ndarray | None],
    truths: Sequence[Sequence[Sequence[float]]],
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    empty_policy: str = "skip",
) -> dict[str, list[float]]:
    """mAP at each heatmap threshold (paper: best 0.8, mAP 0.27 on its Dataset 1).

    Args:
        heatmaps: per image [H, W] in [0, 1], or None for an image with no heatmap (called negative: no boxes).
        truths: per image ground-truth boxes at the heatmap's size.

    Returns:
        ``{"threshold": [...], "map": [...], "images": [...]}``.
    """
    out: dict[str, list[float]] = {"threshold": [], "map": [], "images": []}
    for threshold in thresholds:
        preds, confs = [], []
        for heatmap in heatmaps:
            boxes, conf = ([], []) if heatmap is None else boxes_from_heatmap(heatmap, threshold)
            preds.append(boxes)
            confs.append(conf)
        value, count = mean_average_precision(preds, truths, confs, iou_thresholds, empty_policy)
        out["threshold"].append(float(threshold))
        out["map"].append(value)
        out["images"].append(count)
    return out


__all__ = [
    "EMPTY_POLICIES",
    "HEATMAP_THRESHOLDS",
    "RSNA_IOU_THRESHOLDS",
    "boxes_from_heatmap",
    "heatmap_threshold_sweep",
    "image_precision",
    "iou_matrix",
    "mean_average_precision",
]
