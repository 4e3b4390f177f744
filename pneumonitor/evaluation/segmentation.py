"""Mask overlap metrics (paper Table III): Dice and Jaccard per image, summarized as mean ± sd.

Jaccard comes from ``monai.metrics.compute_iou`` on one-channel binary masks, and Dice from the identity
``Dice = 2 J / (1 + J)``, exact for binary masks (``compute_dice`` gives the same value, ~4x slower on 1024² masks);
``ignore_empty=False``: when the reference mask is empty, the score is 1 if the prediction is empty too and 0
otherwise (an empty reference is a real answer, e.g. a negative image's pneumonia mask). Pixels flagged as
"ignore" in the reference (V7 lung masks: value 127) are removed from both masks before scoring. When the
prediction's size differs from the reference's (e.g. an image stored at another resolution), it is resized to the
reference with nearest neighbour.

:func:`reference_area_region` separates the two errors of a pneumonia mask cut from a heatmap: it takes from each
lung as much area as the reference involves there, at the heatmap's highest pixels, so its Dice measures only
where the heatmap points (placement), not how much it calls (area). It is a diagnostic that reads the reference's
area, never a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pneumonitor.severity import pneumonia_ratio, top_fraction_region


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(np.int64)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(np.int64)
    return mask[rows][:, cols]


def overlap(pred: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None = None) -> tuple[float, float]:
    """(Dice, Jaccard) of two binary [H, W] masks (nonzero = foreground); ``ignore`` [H, W] bool excludes pixels."""
    import torch
    from monai.metrics import compute_iou

    reference = np.asarray(reference) > 0
    pred = _resize_nearest(np.asarray(pred) > 0, reference.shape)
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        pred, reference = pred & keep, reference & keep
    y_pred = torch.as_tensor(pred[None, None], dtype=torch.float32)
    y = torch.as_tensor(reference[None, None], dtype=torch.float32)
    jaccard = float(compute_iou(y_pred, y, include_background=True, ignore_empty=False)[0, 0])
    dice = 2.0 * jaccard / (1.0 + jaccard)
    return dice, jaccard


def reference_area_region(heatmap: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray,
                          reference: np.ndarray) -> np.ndarray:
    """Per lung, the heatmap's highest pixels covering the share of that lung the ``reference`` mask covers
    (:func:`pneumonitor.severity.top_fraction_region`); boolean, the lungs' shape. ``reference`` is resized to the
    lungs with nearest neighbour."""
    right, left = np.asarray(right_lung, dtype=bool), np.asarray(left_lung, dtype=bool)
    reference = _resize_nearest(np.asarray(reference) > 0, right.shape)
    region = np.zeros(right.shape, dtype=bool)
    for lung in (right, left):
        if lung.any():
            region |= top_fraction_region(heatmap, lung, pneumonia_ratio(reference, lung))
    return region


@dataclass
class MeanSd:
    """Mean and (sample, ddof=1) standard deviation over images."""

    mean: float
    sd: float
    n: int

    def format(self, digits: int = 2) -> str:
        return "n/a" if self.n == 0 else f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def mean_sd(values: Sequence[float]) -> MeanSd:
    """Mean ± sd of finite values (sd 0 for a single value; NaN mean for none)."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return MeanSd(float("nan"), float("nan"), 0)
    return MeanSd(float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0, int(array.size))


__all__ = ["MeanSd", "mean_sd", "overlap", "reference_area_region"]
