"""Cumulative metrics of the bundles' evaluators (their Ignite handlers are in :mod:`pneumonitor.engines.handlers`).

:class:`ROCOperatingPointMetric` (sensitivity, specificity, accuracy, PPV or the threshold at the ROC point nearest
(0, 1), Sec. V-B), :class:`HeatmapBoxPrecisionMetric` (the RSNA challenge's per-image precision of boxes from a
thresholded heatmap, averaged over images; the heatmap-threshold sweep of Sec. V-B uses one per threshold) and
:class:`ItemMeanMetric` (the mean of a per-item value such as the validation loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from pneumonitor.datasets.bounding_boxes import boxes_from_mask
from pneumonitor.evaluation.localization import RSNA_IOU_THRESHOLDS, boxes_from_heatmap, image_precision

__all__ = ["roc_operating_point", "ROCOperatingPointMetric", "ItemMeanMetric", "HeatmapBoxPrecisionMetric"]


def roc_operating_point(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Threshold at the ROC point nearest (0, 1) and the statistics of ``scores >= threshold`` there.

    Args:
        scores: ``(N,)`` probabilities; labels: ``(N,)`` 0/1 (both classes must be present).
    Returns: ``threshold, sensitivity, specificity, accuracy, ppv`` (PPV is NaN when nothing is called positive).
    Computed by :mod:`pneumonitor.evaluation.classification` (the same rule as the evaluation reports).
    """
    from pneumonitor.evaluation.classification import nearest_corner_threshold, rates

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(int)
    threshold = nearest_corner_threshold(labels, scores)
    statistics = rates(labels.astype(np.float64), (scores >= threshold).astype(np.float64))
    return {"threshold": float(threshold), **{k: float(v) for k, v in statistics.items()}}


class ROCOperatingPointMetric(CumulativeIterationMetric):
    """Cumulative metric: one statistic of :func:`roc_operating_point` over all the accumulated items.

    Args:
        statistic: ``sensitivity``, ``specificity``, ``accuracy``, ``ppv`` or ``threshold``.
    ``y_pred`` probabilities ``(B, 1)``, ``y`` labels ``(B, 1)``.
    """

    STATISTICS = ("sensitivity", "specificity", "accuracy", "ppv", "threshold")

    def __init__(self, statistic: str = "accuracy") -> None:
        super().__init__()
        if statistic not in self.STATISTICS:
            raise ValueError(f"statistic must be one of {self.STATISTICS}, got {statistic!r}")
        self.statistic = statistic

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> Any:  # type: ignore[override]
        if y is None:
            raise ValueError("labels are required")
        return y_pred.reshape(-1, 1).float(), y.reshape(-1, 1).float()

    def aggregate(self) -> float:  # type: ignore[override]
        scores, labels = self.get_buffer()
        if labels.numel() == 0 or labels.min() == labels.max():
            return float("nan")  # like MONAI's ROCAUC: undefined with a single class
        return roc_operating_point(scores.cpu().numpy(), labels.cpu().numpy())[self.statistic]


class ItemMeanMetric(CumulativeIterationMetric):
    """Cumulative mean of a per-item value (``y_pred``, e.g. each item's loss); ``y`` is ignored."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return torch.as_tensor(y_pred, dtype=torch.float32).reshape(-1, 1)

    def aggregate(self) -> float:  # type: ignore[override]
        values = self.get_buffer()
        return float(values.mean()) if values.numel() else float("nan")


class HeatmapBoxPrecisionMetric(CumulativeIterationMetric):
    """Mean RSNA precision of boxes from ``heatmap >= threshold`` against boxes of the ground-truth regions
    (per-image rule of :mod:`pneumonitor.evaluation.localization`).

    ``y_pred``: heatmaps ``(B, 1, h, w)``; ``y``: binary ground-truth regions ``(B, 1, h, w)`` at the same size
    (``LocalizationTargetd``'s ``region``). Predicted boxes are ranked by their region's peak heatmap value.
    Images without truth and without prediction are skipped (NaN), as in the challenge, and so are images whose
    region is NaN (location unknown).
    """

    def __init__(self, threshold: float = 0.8, iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.iou_thresholds = tuple(iou_thresholds)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("ground-truth regions are required")
        out = []
        for heatmap, region in zip(y_pred.detach().cpu().numpy(), y.detach().cpu().numpy()):
            heatmap = heatmap.reshape(heatmap.shape[-2:])
            if np.isnan(region).any():
                out.append(float("nan"))  # location unknown (has_target 0): not scored
                continue
            if region.shape[-2:] != heatmap.shape:
                raise ValueError(f"heatmap {heatmap.shape} and region {region.shape[-2:]} differ in size")
            predicted, peaks = boxes_from_heatmap(heatmap, self.threshold)
            truth = boxes_from_mask(region.reshape(heatmap.shape) > 0.5, closing_radius=0)
            value = image_precision(predicted, truth, peaks, self.iou_thresholds)
            out.append(float("nan") if value is None else value)
        return torch.tensor(out, dtype=torch.float32).reshape(-1, 1)

    def aggregate(self) -> float:  # type: ignore[override]
        values = self.get_buffer()
        values = values[~torch.isnan(values)]
        return float(values.mean()) if values.numel() else float("nan")
