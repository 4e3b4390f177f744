"""Every metric of the paper's Sec. V for one (results, reference) pair, as far as the reference allows.

Tasks run when the reference has what they need:
* classification (Table II): reference ``label`` + ``pneumonia_probability``;
* localization (Fig. 8a): reference ``boxes`` (not of items with ``has_localization == 0``) + result ``heatmap``; boxes of images that analyze called negative
  (``positive == 0``) are not predicted (``gate_by_classification``), as the system reports no region for them;
* lung segmentation (Table III): reference ``lung_mask`` + result ``lung_mask`` (nonzero = lung);
* pneumonia segmentation: reference ``mask`` + result ``pneumonia_mask``; with result ``heatmap`` and ``lung_mask`` too,
  a sweep of mean Dice of ``(heatmap >= t) ∩ lungs`` over ``DICE_SWEEP_THRESHOLDS`` (not gated by classification: it
  measures the heatmap), whose best threshold is the heatmap operating point :func:`operating_point` picks;
* severity (Fig. 10, Table IV): reference ``severity`` (0-8) + ``score_total``; per lung: reference
  ``involvement_right/left`` (percent, mask-derived) vs ``ratio_right/left`` and ``severity_right/left`` vs
  ``score_right/left``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pneumonitor.datasets.images import image_size, read_gray
from pneumonitor.evaluation.classification import evaluate_classification
from pneumonitor.evaluation.localization import HEATMAP_THRESHOLDS, heatmap_threshold_sweep
from pneumonitor.evaluation.matching import MatchedSet
from pneumonitor.evaluation.segmentation import mean_sd, overlap
from pneumonitor.evaluation.severity_agreement import agreement, confusion_matrix


#: heatmap thresholds of the pneumonia-mask Dice sweep (the operating-point choice); wider than the paper's mAP sweep
DICE_SWEEP_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


@dataclass
class EvaluationSettings:
    """Options of one evaluation."""

    threshold: float | None = None  # classification operating point; None = nearest (0,1)
    n_bootstrap: int = 1000
    seed: int = 0
    heatmap_thresholds: Sequence[float] = HEATMAP_THRESHOLDS
    empty_policy: str = "skip"
    gate_by_classification: bool = True
    tasks: Sequence[str] = ("classification", "localization", "lung_segmentation", "pneumonia_segmentation", "severity")


@dataclass
class Evaluation:
    """Metrics (JSON-ready), per-image rows and the arrays the figures need."""

    name: str
    metrics: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    severity_pairs: tuple[list[float], list[float]] = ((), ())  # type: ignore[assignment]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _reference_shape(item: dict[str, Any]) -> tuple[int, int] | None:
    if item.get("rows") and item.get("columns"):
        return int(item["rows"]), int(item["columns"])
    try:
        return image_size(item["image"])
    except Exception:  # DICOM or missing file: sizes are assumed equal
        return None


def _scale_boxes(boxes: list[list[float]], source: tuple[int, int] | None, target: tuple[int, int]) -> list[list[float]]:
    if source is None or source == target:
        return boxes
    sy, sx = target[0] / source[0], target[1] / source[1]
    return [[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in boxes]


def by_source(
    labels: Sequence[int], scores: Sequence[float], sources: Sequence[str | None], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per data source: n, positives, median score per class, the share called positive at ``threshold`` per class
    and the AUC when the source holds both classes. A model that learned the source instead of the disease shows
    it here (e.g. every negative of one source called positive), not in the pooled AUC."""
    from pneumonitor.evaluation.classification import roc_auc

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    names = np.asarray([str(source) for source in sources])
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names)):
        pick = names == name
        row: dict[str, Any] = {"n": int(pick.sum()), "n_positive": int(y[pick].sum())}
        for label, key in ((1, "positives"), (0, "negatives")):
            chosen = s[pick & (y == label)]
            if chosen.size:
                row[f"median_score_{key}"] = float(np.median(chosen))
                row[f"called_positive_{key}"] = float(np.mean(chosen >= threshold))
        row["auc"] = float(roc_auc(y[pick], s[pick])) if 0 < row["n_positive"] < row["n"] else None
        table[name] = row
    return table


def evaluate_matched(name: str, matched: MatchedSet, settings: EvaluationSettings) -> Evaluation:
    """Compute all applicable metrics for one matched set."""
    from tqdm import tqdm

    metrics: dict[str, Any] = {
        "name": name,
        "matched": len(matched.pairs),
        "unmatched_reference": len(matched.unmatched_reference),
        "skipped_by_analyze": len(matched.skipped_by_analyze),
    }
    per_image: list[dict[str, Any]] = []
    for item, row in matched.pairs:
        per_image.append({"image": item["image"], "result_image": row["image"]})

    tasks = set(settings.tasks)
    # classification
    cls = [(item["label"], row["pneumonia_probability"], item.get("source")) for item, row in matched.pairs
           if item.get("label") in (0, 1) and _finite(row.get("pneumonia_probability"))]
    if "classification" in tasks and cls and len({label for label, _, _ in cls}) == 2:
        labels, scores, _ = zip(*cls)
        result = evaluate_classification(labels, scores, settings.threshold, settings.n_bootstrap, settings.seed)
        metrics["classification"] = result.to_dict()
        sources = [source for _, _, source in cls]
        if len({source for source in sources if source}) > 1:
            metrics["classification"]["by_source"] = by_source(labels, scores, sources, result.threshold)
    elif "classification" in tasks and cls:
        metrics["classification"] = {"skipped": "the reference holds a single class: no ROC"}

    # segmentation (lungs, pneumonia) and localization need per-image files
    lung_scores, pneumonia_scores = [], []
    heatmaps: list[np.ndarray | None] = []
    truths: list[list[list[float]]] = []
    dice_sweep: list[list[float]] = []
    for index, (item, row) in enumerate(tqdm(matched.pairs, desc=f"{name}: masks", unit="img", leave=False)):
        record = per_image[index]
        if "lung_segmentation" in tasks and item.get("lung_mask"):
            pred_path = matched.result_path(row, "lung_mask")
            if pred_path is not None and pred_path.is_file():
                reference = read_gray(item["lung_mask"])
                ignore_value = item.get("lung_mask_ignore_value")
                ignore = reference == int(ignore_value) if ignore_value is not None else None
                dice, jaccard = overlap(read_gray(pred_path), reference, ignore)
                lung_scores.append((dice, jaccard))
                record.update(lung_dice=dice, lung_jaccard=jaccard)
        if "pneumonia_segmentation" in tasks and item.get("mask"):
            pred_path = matched.result_path(row, "pneumonia_mask")
            if pred_path is not None and pred_path.is_file():
                reference_mask = read_gray(item["mask"])
                dice, jaccard = overlap(read_gray(pred_path), reference_mask)
                pneumonia_scores.append((dice, jaccard))
                record.update(pneumonia_dice=dice, pneumonia_jaccard=jaccard)
                heat_path, lung_path = matched.result_path(row, "heatmap"), matched.result_path(row, "lung_mask")
                if heat_path is not None and heat_path.is_file() and lung_path is not None and lung_path.is_file():
                    heat = read_gray(heat_path).astype(np.float32) / 255.0
                    lungs = read_gray(lung_path) > 0
                    if heat.shape == reference_mask.shape == lungs.shape:
                        dice_sweep.append([overlap((heat >= t) & lungs, reference_mask)[0] for t in DICE_SWEEP_THRESHOLDS])
        # mix items with has_localization == 0 are positives whose location is unknown: their [] is not a truth
        if "localization" in tasks and isinstance(item.get("boxes"), list) and item.get("has_localization", 1) != 0:
            heat_path = matched.result_path(row, "heatmap")
            if heat_path is None or not heat_path.is_file():
                continue
            heatmap = read_gray(heat_path).astype(np.float32) / 255.0
            boxes = _scale_boxes(item["boxes"], _reference_shape(item), heatmap.shape)
            called_negative = settings.gate_by_classification and row.get("positive") == 0
            heatmaps.append(None if called_negative else heatmap)
            truths.append(boxes)
    for key, scores in (("lung_segmentation", lung_scores), ("pneumonia_segmentation", pneumonia_scores)):
        if scores:
            metrics[key] = {"dice": vars(mean_sd([s[0] for s in scores])),
                            "jaccard": vars(mean_sd([s[1] for s in scores]))}
    if dice_sweep:
        means = np.asarray(dice_sweep).mean(axis=0)
        best_index = int(np.argmax(means))
        metrics.setdefault("pneumonia_segmentation", {})["heatmap_sweep"] = {
            "threshold": list(DICE_SWEEP_THRESHOLDS), "dice": [float(v) for v in means], "images": len(dice_sweep),
            "best_threshold": float(DICE_SWEEP_THRESHOLDS[best_index]), "best_dice": float(means[best_index]),
        }
    if heatmaps:
        sweep = heatmap_threshold_sweep(heatmaps, truths, settings.heatmap_thresholds, empty_policy=settings.empty_policy)
        finite = [i for i, v in enumerate(sweep["map"]) if math.isfinite(v)]
        best = max(finite, key=lambda i: sweep["map"][i]) if finite else None
        metrics["localization"] = {
            "images": len(heatmaps),
            "empty_policy": settings.empty_policy,
            "gate_by_classification": settings.gate_by_classification,
            "sweep": sweep,
            "best_threshold": sweep["threshold"][best] if best is not None else None,
            "best_map": sweep["map"][best] if best is not None else None,
        }

    # severity
    pred_total, ref_total = [], []
    if "severity" in tasks:
        for index, (item, row) in enumerate(matched.pairs):
            if _finite(item.get("severity")) and _finite(row.get("score_total")):
                pred_total.append(row["score_total"])
                ref_total.append(float(item["severity"]))
                per_image[index].update(severity_reference=float(item["severity"]), severity_predicted=row["score_total"])
        if pred_total:
            block: dict[str, Any] = {
                "total": agreement(pred_total, ref_total).to_dict(),
                "confusion_matrix": confusion_matrix(pred_total, ref_total).tolist(),
            }
            for side in ("right", "left"):
                ratios = [(row[f"ratio_{side}"], item[f"involvement_{side}"]) for item, row in matched.pairs
                          if _finite(item.get(f"involvement_{side}")) and _finite(row.get(f"ratio_{side}"))]
                scores = [(row[f"score_{side}"], item[f"severity_{side}"]) for item, row in matched.pairs
                          if _finite(item.get(f"severity_{side}")) and _finite(row.get(f"score_{side}"))]
                if ratios:
                    pred, ref = np.asarray(ratios).T
                    block[f"involvement_{side}"] = {"n": len(ratios), "mae_percent": float(np.mean(np.abs(pred - ref))),
                                                    "agreement": agreement(pred, ref).to_dict()}
                if scores:
                    pred, ref = np.asarray(scores).T
                    block[f"score_{side}"] = agreement(pred, ref).to_dict()
            metrics["severity"] = block
    return Evaluation(name=name, metrics=metrics, per_image=per_image, severity_pairs=(pred_total, ref_total))


def operating_point(metrics: dict[str, Any]) -> dict[str, Any]:
    """The operating point an evaluation of a validation split supports, for ``inference.json``.

    ``classification_threshold``: the ROC point nearest (0, 1) (paper Sec. V-B); ``heatmap_threshold``: the best of
    the pneumonia-mask Dice sweep, else the best of the RSNA mAP sweep, else absent. ``operating_point_basis`` says
    what each came from (rule and image counts).

    Raises:
        ValueError: the metrics hold no classification result (nothing to choose from).
    """
    classification = metrics.get("classification", {})
    if "threshold" not in classification:
        raise ValueError("no classification metrics to choose a threshold from (the reference needs both classes)")
    chosen: dict[str, Any] = {"classification_threshold": round(float(classification["threshold"]), 4)}
    basis = [f"classification: {classification.get('threshold_rule', 'nearest (0,1)')}, n={classification.get('n')}"]
    sweep = metrics.get("pneumonia_segmentation", {}).get("heatmap_sweep")
    localization = metrics.get("localization", {})
    if sweep:
        chosen["heatmap_threshold"] = sweep["best_threshold"]
        basis.append(f"heatmap: best mean Dice {sweep['best_dice']:.3f} of (heatmap>=t)∩lungs vs reference masks, "
                     f"n={sweep['images']}")
    elif localization.get("best_threshold") is not None:
        chosen["heatmap_threshold"] = localization["best_threshold"]
        basis.append(f"heatmap: best RSNA mAP {localization['best_map']:.3f}, n={localization['images']}")
    chosen["operating_point_basis"] = "; ".join(basis)
    return chosen


__all__ = ["DICE_SWEEP_THRESHOLDS", "by_source", "Evaluation", "EvaluationSettings", "evaluate_matched", "operating_point"]
