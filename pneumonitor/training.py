"""Workflow pieces the MONAI bundles of DLNet and LSNet wire into MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``.

DLNet returns two outputs (a logit and 128 localization maps) and learns from three targets (the label, the soft
localization target and a flag saying whether the target is known); MONAI's engines pass one ``targets`` object from
``prepare_batch`` to ``loss_function(pred, targets)``, so:

- :class:`DLNetPrepareBatch` gives ``(image, {"label", "target", "has_target"})``;
- :class:`DLNetEngineLoss` is :class:`pneumonitor.networks.DLNetLoss` with the engine's ``(pred, targets)`` signature;
- :class:`DLNetOutputd` turns one decollated evaluator item into ``pred`` (probability), ``heatmap``, ``label`` and the
  item's loss (the validation loss that drives ``ReduceLROnPlateau``).

Metrics: :class:`ROCOperatingPoint` (sensitivity, specificity, accuracy, PPV or the threshold at the ROC point nearest
(0, 1), Sec. V-B) and :class:`HeatmapBoxPrecision` (the RSNA challenge's per-image precision of boxes from a thresholded
heatmap, averaged over images; the heatmap-threshold sweep of Sec. V-B uses one per threshold).

LSNet: :class:`MaskedBinaryDiceLoss` (Dice loss that skips pixels with the ignore label) and :class:`ExcludeIgnoredd`
(the same exclusion for the Dice/Jaccard metrics).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Callable

import numpy as np
import torch
from monai.config import KeysCollection
from monai.engines.utils import PrepareBatch
from monai.handlers import IgniteMetricHandler
from monai.losses import MaskedDiceLoss
from monai.metrics import CumulativeIterationMetric
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import nn

from pneumonitor.datasets.boxes import boxes_from_mask
from pneumonitor.evaluation.localization import RSNA_IOU_THRESHOLDS, boxes_from_heatmap, image_precision
from pneumonitor.networks.dlnet import maps_to_heatmap
from pneumonitor.networks.losses import DLNetLoss

__all__ = [
    "DLNetPrepareBatch",
    "DLNetEngineLoss",
    "DLNetOutputd",
    "ROCOperatingPointMetric",
    "ROCOperatingPoint",
    "roc_operating_point",
    "HeatmapBoxPrecisionMetric",
    "HeatmapBoxPrecision",
    "MaskedBinaryDiceLoss",
    "ExcludeIgnoredd",
    "SelectOutput",
    "SavePNGd",
    "ResumeCheckpoint",
    "ItemMean",
    "ItemMeanMetric",
    "group_balanced_weights",
]

# ----------------------------------------------------------------------------------------------------------- DLNet
def group_balanced_weights(
    items: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("source", "label"),
    power: float = 1.0,
    nested: bool = False,
) -> torch.Tensor:
    """Per-item sampling weights (float64, summing to ``len(items)``) for torch's ``WeightedRandomSampler``.

    Flat (``nested=False``): ``1 / n_group ** power`` with one group per distinct value tuple of ``keys``; with
    ``power=1`` every group is drawn equally often whatever its size, ``power=0`` gives uniform weights.
    Nested (``nested=True``): the keys are levels; each value of the first key gets an equal share, split equally
    among the values of the second key found under it, and so on; a leaf group spreads its share evenly
    (``power`` does not apply). With ``("source", "label", "has_localization")`` every source weighs the same, each
    source's negatives as much as its positives, and its localized positives as much as its other positives.

    Why: the training mix's adult positives come from one collection and most adult negatives from another (JSRT),
    so unweighted training learns the source; balancing labels within each source makes the collection's own few
    negatives count as much as its positives. Items missing a key form their own ``None`` group.
    """
    if not items:
        raise ValueError("no items to weight")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    groups = [tuple(str(item.get(key)) for key in keys) for item in items]
    counts: dict[tuple[str, ...], int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    if not nested:
        weights = torch.tensor([counts[group] ** -power for group in groups], dtype=torch.float64)
        return weights * (len(items) / weights.sum())
    # share of each leaf group: product over levels of 1 / (number of sibling values under the same parent)
    children: dict[tuple[str, ...], set[str]] = {}
    for group in counts:
        for level in range(len(group)):
            children.setdefault(group[:level], set()).add(group[level])
    share = {group: float(np.prod([1.0 / len(children[group[:level]]) for level in range(len(group))]))
             for group in counts}
    weights = torch.tensor([share[group] / counts[group] for group in groups], dtype=torch.float64)
    return weights * (len(items) / weights.sum())


class DLNetPrepareBatch(PrepareBatch):
    """Batch dict -> ``(image, targets)`` for DLNet's trainer and evaluator.

    ``targets = {"label": (B, 1) float or None, "target": (B, 1, h, w) float or None, "has_target": (B,) float}``
    plus, when the batch has them, the weak-supervision inputs ``lung`` ``(B, 1, h, w)``, ``has_lung`` ``(B,)`` and
    ``extent`` ``(B,)``; inference data (no ``label``, no ``target``) give ``None`` and ``has_target`` zeros.
    """

    WEAK_KEYS = ("lung", "has_lung", "extent")

    def __init__(
        self, image_key: str = "image", label_key: str = "label", target_key: str = "target",
        has_target_key: str = "has_target",
    ) -> None:
        self.image_key, self.label_key = image_key, label_key
        self.target_key, self.has_target_key = target_key, has_target_key

    def __call__(
        self, batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        batch = image.shape[0]
        label = batchdata.get(self.label_key)
        if label is not None:
            label = torch.as_tensor(label).reshape(batch, 1).to(device=device, dtype=torch.float32,
                                                                non_blocking=non_blocking)
        target = batchdata.get(self.target_key)
        if target is not None:
            target = torch.as_tensor(target).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        has_target = batchdata.get(self.has_target_key)
        has_target = (
            torch.zeros(batch) if has_target is None or target is None else torch.as_tensor(has_target).reshape(batch)
        ).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        targets = {"label": label, "target": target, "has_target": has_target}
        for key in self.WEAK_KEYS:
            if batchdata.get(key) is not None:
                targets[key] = torch.as_tensor(batchdata[key]).to(device=device, dtype=torch.float32,
                                                                   non_blocking=non_blocking)
        return image, targets


class DLNetEngineLoss(nn.Module):
    """:class:`DLNetLoss` called as MONAI's engines call a loss: ``loss(pred=(logits, maps), targets=dict)``.

    Args: those of :class:`DLNetLoss`. ``last_terms`` holds the last call's unweighted terms (for the training log).
    """

    def __init__(self, localization_weight: float = 1e-5, mse_reduction: str = "sum", pos_weight: float | None = None,
                 supervise: str = "maps", outside_lung_weight: float = 0.0, extent_weight: float = 0.0):
        super().__init__()
        self.loss = DLNetLoss(localization_weight=localization_weight, mse_reduction=mse_reduction,
                              pos_weight=pos_weight, supervise=supervise, outside_lung_weight=outside_lung_weight,
                              extent_weight=extent_weight)

    @property
    def last_terms(self) -> dict[str, float]:
        return self.loss.last_terms

    def forward(self, pred: Sequence[torch.Tensor], targets: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        logits, maps = pred[0], pred[1]
        return self.loss(logits, maps, targets["label"], targets.get("target"), targets.get("has_target"),
                         targets.get("lung"), targets.get("has_lung"), targets.get("extent"))


class DLNetOutputd(MapTransform):
    """Post-processing of one decollated DLNet evaluator/inference item.

    Input keys: ``pred`` = ``[logit (1,), maps (M, h, w)]`` (the decollated network output), ``label`` = the
    targets dict of :class:`DLNetPrepareBatch` (or a plain label). Output keys:

    - ``pred``: pneumonia probability ``(1,)`` in [0, 1];
    - ``heatmap``: per-pixel max over the maps ``(1, h, w)``, or resized (bilinear) to ``heatmap_size``;
    - ``label`` ``(1,)``, ``target`` ``(1, h, w)``, ``has_target`` ``()`` when the targets were given;
    - ``truth_region``: the item's ``region`` (binary truth at the maps' size), NaN when ``has_target`` is 0;
    - ``loss``: the item's :class:`DLNetLoss` value ``()`` when ``loss`` is given and targets exist;
    - ``maps`` is dropped unless ``keep_maps``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        heatmap_key: str = "heatmap",
        label_key: str = "label",
        heatmap_size: Sequence[int] | None = None,
        loss: DLNetEngineLoss | DLNetLoss | None = None,
        loss_key: str = "loss",
        keep_maps: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.heatmap_key, self.label_key, self.loss_key = heatmap_key, label_key, loss_key
        self.heatmap_size = None if heatmap_size is None else tuple(int(s) for s in heatmap_size)
        self.loss = loss.loss if isinstance(loss, DLNetEngineLoss) else loss
        self.keep_maps = keep_maps

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            logit, maps = d[key][0], d[key][1]
            d[key] = torch.sigmoid(logit.reshape(1).float())
            d[self.heatmap_key] = maps_to_heatmap(maps[None].float(), self.heatmap_size)[0]
            targets = d.get(self.label_key)
            if isinstance(targets, Mapping) and targets.get("label") is None:
                d.pop(self.label_key)  # inference: nothing to compare with
            elif isinstance(targets, Mapping):
                d[self.label_key] = torch.as_tensor(targets["label"]).reshape(1).float()
                target, has_target = targets.get("target"), targets.get("has_target")
                # decollation turns 0-d tensors into Python numbers
                has_target = None if has_target is None else torch.as_tensor(has_target, dtype=torch.float32)
                if target is not None:
                    d["target"], d["has_target"] = target, has_target
                    if "region" in d:
                        # a new key: MONAI's engines keep only new keys (and the output's own) in the output
                        region = torch.as_tensor(d["region"], dtype=torch.float32)
                        if float(has_target) == 0:  # unknown location: the heatmap-threshold sweep skips NaN regions
                            region = torch.full_like(region, float("nan"))
                        d["truth_region"] = region
                if self.loss is not None:
                    weak = {key: None if targets.get(key) is None else torch.as_tensor(targets[key]).float()[None]
                            for key in DLNetPrepareBatch.WEAK_KEYS}
                    with torch.no_grad():
                        value = self.loss(
                            logit.reshape(1, 1).float(), maps[None].float(), d[self.label_key],
                            None if target is None else target[None], None if target is None else has_target.reshape(1),
                            weak["lung"], weak["has_lung"], weak["extent"],
                        )
                    d[self.loss_key] = value.detach().reshape(())
            if self.keep_maps:
                d["maps"] = maps
        return d


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


class ROCOperatingPoint(IgniteMetricHandler):
    """Ignite handler of :class:`ROCOperatingPointMetric` (``output_transform`` gives ``(pred, label)``)."""

    def __init__(self, statistic: str = "accuracy", output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=ROCOperatingPointMetric(statistic), output_transform=output_transform,
                         save_details=False)


class ItemMeanMetric(CumulativeIterationMetric):
    """Cumulative mean of a per-item value (``y_pred``, e.g. each item's loss); ``y`` is ignored."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return torch.as_tensor(y_pred, dtype=torch.float32).reshape(-1, 1)

    def aggregate(self) -> float:  # type: ignore[override]
        values = self.get_buffer()
        return float(values.mean()) if values.numel() else float("nan")


class ItemMean(IgniteMetricHandler):
    """Ignite handler: the mean over all evaluated items of ``item[key]`` (the validation loss with ``key="loss"``,
    which :class:`DLNetOutputd` computes per item)."""

    def __init__(self, key: str = "loss") -> None:
        super().__init__(
            metric_fn=ItemMeanMetric(),
            output_transform=lambda output: ([item[key] for item in output], [item[key] for item in output]),
            save_details=False,
        )


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


class HeatmapBoxPrecision(IgniteMetricHandler):
    """Ignite handler of :class:`HeatmapBoxPrecisionMetric` (``output_transform`` gives ``(heatmap, region)``)."""

    def __init__(self, threshold: float = 0.8, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=HeatmapBoxPrecisionMetric(threshold), output_transform=output_transform,
                         save_details=False)


class ResumeCheckpoint:
    """Makes a training run resumable: saves ``save_dict``'s states to ``path`` after every epoch (atomically) and,
    when ``path`` exists as training starts, loads them back, so a killed run continues where it stopped.

    ``save_dict`` should hold the network, the optimizer, the LR scheduler and the best-model saver's checkpoint
    bookkeeping (so a resumed run does not overwrite a better ``model.pt`` with its first validation); the engine the
    handler is attached to is added as ``trainer`` (its epoch and iteration counters: ignite then runs only the
    remaining epochs; a config could not name it without a circular reference). Loading uses MONAI's
    ``CheckpointLoader``; the file is removed by nobody: delete it to start over.
    """

    def __init__(self, path: str, save_dict: Mapping[str, Any]) -> None:
        self.path = str(path)
        self.save_dict = dict(save_dict)

    def attach(self, engine: Any) -> None:
        import logging
        import os

        from ignite.engine import Events
        from monai.handlers import CheckpointLoader

        self.save_dict.setdefault("trainer", engine)
        if os.path.isfile(self.path):
            logging.getLogger(__name__).info("resuming from %s", self.path)
            CheckpointLoader(load_path=self.path, load_dict=self.save_dict, map_location="cpu").attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _save(self, engine: Any) -> None:
        from pathlib import Path

        from pneumonitor.networks.checkpoint import _torch_save_atomic

        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return  # one writer: every rank holds the same states under DDP
        _torch_save_atomic({name: obj.state_dict() for name, obj in self.save_dict.items()}, Path(self.path))


class SelectOutput(nn.Module):
    """``network(x)[index]``: one output of a multi-output network (DLNet gives ``(logits, maps)``).

    MONAI's ``verify_net_in_out`` checks a single output tensor; the DLNet bundle verifies the classification output
    through this wrapper (``network_pred`` in ``inference.json``) and the maps through ``network_maps``.
    """

    def __init__(self, network: nn.Module, index: int = 0) -> None:
        super().__init__()
        self.network = network
        self.index = int(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[self.index]


class SavePNGd(MapTransform):
    """Write ``(1, h, w)`` maps as 8-bit PNGs at the source image's size: ``<output_dir>/<stem>_<postfix>.png``.

    Values are clipped to [0, 1] and scaled to 0-255 (``round(255 * clip(x, 0, 1))``, as ``pneumonitor analyze``
    writes heatmaps). The map is resized (``mode``: ``bilinear`` for heatmaps, ``nearest`` for masks) to the
    ``spatial_shape`` of its meta data (the stored image's rows and columns) and written row-major, through a
    temporary file and a rename. The path written is stored under ``<key>_path``.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str, output_postfix: str = "heatmap", mode: str = "bilinear",
        meta_key: str = "image", allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.output_postfix, self.mode, self.meta_key = output_dir, output_postfix, mode, meta_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import os
        from pathlib import Path

        from PIL import Image

        d = dict(data)
        meta = getattr(d.get(self.meta_key), "meta", {}) or {}
        source = Path(str(meta.get("filename_or_obj", "image")))
        stem = source.name.split(".")[0]
        for key in self.key_iterator(d):
            array = torch.as_tensor(d[key], dtype=torch.float32).detach().cpu().reshape(1, 1, *d[key].shape[-2:])
            shape = meta.get("spatial_shape")
            if shape is not None:
                size = tuple(int(s) for s in np.asarray(shape).reshape(-1)[:2])
                align = None if self.mode == "nearest" else False
                array = torch.nn.functional.interpolate(array, size=size, mode=self.mode, align_corners=align)
            pixels = np.round(255 * np.clip(array[0, 0].numpy(), 0, 1)).astype(np.uint8)
            out_dir = Path(self.output_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{stem}_{self.output_postfix}.png"
            tmp = path.with_name(f".{path.name}.tmp.png")
            Image.fromarray(pixels).save(tmp)
            os.replace(tmp, path)
            d[f"{key}_path"] = str(path)
        return d


# ----------------------------------------------------------------------------------------------------------- LSNet
class MaskedBinaryDiceLoss(nn.Module):
    """Dice loss on sigmoid(logits) that ignores pixels whose target equals ``ignore_label``.

    Input logits ``(B, 1, H, W)``; target ``(B, 1, H, W)`` with 0/1 and possibly ``ignore_label`` (e.g. the V7 masks'
    "ignore" pixels). Extra keyword arguments go to MONAI's ``DiceLoss`` (through ``MaskedDiceLoss``).
    """

    def __init__(self, ignore_label: float = -1.0, **dice_kwargs: Any) -> None:
        super().__init__()
        self.ignore_label = float(ignore_label)
        self.dice = MaskedDiceLoss(sigmoid=True, **dice_kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_label).to(logits.dtype)
        return self.dice(logits, (target * valid).clamp(0, 1), mask=valid)


class ExcludeIgnoredd(MapTransform):
    """Zero ``keys`` (the binary prediction and the label) where the label is ``ignore_label``.

    The ignored pixels then count as background in both, so Dice and Jaccard only see the annotated pixels.
    """

    def __init__(
        self, keys: KeysCollection = ("pred", "label"), label_key: str = "label", ignore_label: float = -1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.ignore_label = label_key, float(ignore_label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ignored = convert_to_tensor(d[self.label_key]) == self.ignore_label
        if bool(ignored.any()):
            for key in self.key_iterator(d):
                d[key] = torch.where(ignored.to(convert_to_tensor(d[key]).device), 0, convert_to_tensor(d[key]))
        return d
