"""Every metric of the paper's Sec. V for one (results, reference) pair, as far as the reference allows.

Tasks run when the reference has what they need:
* classification (Table II): reference ``label`` + ``pneumonia_probability``;
* localization (Fig. 8a): reference ``boxes`` (not of items with ``has_localization == 0``) + result ``heatmap``; boxes of images that analyze called negative
  (``positive == 0``) are not predicted (``gate_by_classification``), as the system reports no region for them;
* lung segmentation (Table III): reference ``lung_mask`` + result ``lung_mask`` (nonzero = lung);
* pneumonia segmentation: reference ``mask`` + result ``pneumonia_mask``; with result ``heatmap`` and ``lung_mask`` too,
  a sweep of mean Dice of ``(heatmap >= t) ∩ lungs`` over ``DICE_SWEEP_THRESHOLDS`` (not gated by classification: it
  measures the heatmap), whose best threshold is the heatmap operating point :func:`operating_point` picks; and
  ``reference_area``: the Dice of the heatmap's highest pixels at the share of each lung the reference covers
  (:func:`~pneumonitor.evaluation.segmentation.reference_area_region`; analyze's right/left lung labels): where the
  heatmap points, apart from how much it calls (a diagnostic that reads the reference's area, not a result);
* severity (Fig. 10, Table IV): reference ``severity`` (0-8) + ``score_total``; per lung: reference
  ``involvement_right/left`` (percent, mask-derived) vs ``ratio_right/left`` and ``severity_right/left`` vs
  ``score_right/left``; with the result ``heatmap`` and ``lung_mask`` PNGs, a sweep of the 0-8 score's MAE and bias
  against the expert scores over ``SEVERITY_SWEEP_THRESHOLDS`` (gated by classification, as the system scores),
  whose lowest MAE is the heatmap operating point :func:`operating_point` prefers; with several reference sources,
  the agreement per source (``by_source``, each beside its own reference mean's MAE);
* clinical course (Hannover): reference ``icu_at_exam`` / ``died`` vs ``score_total``, ``ratio_total`` and the
  probability (AUC, means per group).

Severity, involvement and the pneumonia mask are measured as the system reports them at the **evaluated**
classification threshold (:func:`regate`), which may differ from the one analyze used (a threshold chosen on the
evaluated data, ``--threshold``, another operating point): images analyze scored below it report nothing; images
analyze called negative at or above it were never scored, which ``unscored_at_threshold`` says (and the tables).

Every quality number comes with a trivial baseline measured on the same images (``baselines``): the mean image
intensity as a classifier and as a severity predictor, predicting the reference mean (score, per-lung involvement),
and calling the whole lung pneumonia (mask Dice, involvement). A number that does not beat its baseline is a finding.
CIs of the classification come from a patient-level (cluster) bootstrap when the reference has ``patient_id``s; so
do those of the 0-8 score's r, MAE and bias, and ``baseline_comparisons``: each model number against its baseline,
both recomputed on the same resamples, with the CI of their difference and whether it beats the baseline
(:func:`~pneumonitor.bootstrap.compare_to_baseline`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from pneumonitor.datasets.images import image_size, read_gray
from pneumonitor.bootstrap import MIN_UNITS, bootstrap_estimate, compare_to_baseline
from pneumonitor.evaluation.classification import (evaluate_classification, group_specificity_threshold, rank_auc,
                                                   roc_auc)
from pneumonitor.evaluation.localization import HEATMAP_THRESHOLDS, heatmap_threshold_sweep
from pneumonitor.evaluation.matching import MatchedSet
from pneumonitor.evaluation.segmentation import mean_sd, overlap, reference_area_region
from pneumonitor.evaluation.severity_agreement import agreement, agreement_by_source, confusion_matrix
from pneumonitor.severity import LEFT_LUNG_VALUE, RIGHT_LUNG_VALUE, lung_score, pneumonia_ratio


LOGGER = logging.getLogger(__name__)

#: heatmap thresholds of the pneumonia-mask Dice sweep; wider than the paper's mAP sweep
DICE_SWEEP_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
#: heatmap thresholds of the severity sweep (score MAE against expert scores: the heatmap operating-point choice)
SEVERITY_SWEEP_THRESHOLDS: tuple[float, ...] = DICE_SWEEP_THRESHOLDS
#: fewest expert-scored images a heatmap operating point may be chosen on (fewer: the threshold is left as it was)
MIN_OPERATING_POINT_IMAGES = 30
#: the high-specificity operating point: at most this share of each source's negatives called positive ...
HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE = 0.10
#: ... counting the sources with at least this many negatives (fewer cannot measure 10 %)
HIGH_SPECIFICITY_MIN_NEGATIVES = 20
#: the project's sensitivity goal on adult pneumonia; with HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE the two ends of
#: the per-source ROC bounds (:func:`by_source`: how far a source's ROC is from meeting both at one threshold)
GOAL_MIN_SENSITIVITY = 0.85


@dataclass
class EvaluationSettings:
    """Options of one evaluation."""

    threshold: float | None = None  # classification operating point; None = nearest (0,1) on the evaluated data
    threshold_rule: str = ""  # where a given threshold came from (shown in the tables)
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
    labels: Sequence[int], scores: Sequence[float], sources: Sequence[str | None], threshold: float,
    severity_scores: Sequence[float] | None = None, patients: Sequence | None = None, n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per data source: n, positives, median score per class, the share called positive at ``threshold`` per class
    (on negatives: the false-positive rate; on positives: the sensitivity), the mean 0-8 ``severity_scores`` per
    class when given, and the AUC when the source holds both classes. A model that learned the source instead of
    the disease shows it here (e.g. every negative of one source called positive), not in the pooled AUC.
    With ``n_bootstrap``, each share gets its 95 % CI (``..._ci``; over ``patients`` when given: 5 % of 79 normals
    cannot show a rate under 10 % by itself). A source of both classes also gets the two ends of its ROC that the
    goals name, whatever the threshold: ``best_sensitivity`` with at most ``HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE``
    of its normals positive, and ``fewest_false_positives`` at ``GOAL_MIN_SENSITIVITY`` sensitivity (sources with at
    least ``HIGH_SPECIFICITY_MIN_NEGATIVES`` images of each class: fewer cannot resolve 10 %)."""
    from pneumonitor.evaluation.classification import best_sensitivity, fewest_false_positives, rate_interval, roc_auc

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
                if n_bootstrap:
                    where = pick & (y == label)
                    row[f"called_positive_{key}_ci"] = list(rate_interval(
                        chosen >= threshold, None if patients is None else np.asarray(patients, dtype=object)[where],
                        n_bootstrap, seed))
                if severity_scores is not None:
                    totals = np.asarray(severity_scores, dtype=float)[pick & (y == label)]
                    if np.isfinite(totals).any():
                        row[f"mean_score_total_{key}"] = float(np.nanmean(totals))
        row["auc"] = float(roc_auc(y[pick], s[pick])) if 0 < row["n_positive"] < row["n"] else None
        if min(row["n_positive"], row["n"] - row["n_positive"]) >= HIGH_SPECIFICITY_MIN_NEGATIVES:
            row["best_sensitivity"] = best_sensitivity(y[pick], s[pick], HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE)
            row["fewest_false_positives"] = fewest_false_positives(y[pick], s[pick], GOAL_MIN_SENSITIVITY)
        table[name] = row
    return table


def high_specificity_point(
    labels: Sequence[int], scores: Sequence[float], sources: Sequence[str | None], totals: Sequence[float],
    positives: Sequence[int], patients: Sequence | None = None, n_bootstrap: int = 0, seed: int = 0,
) -> dict[str, Any] | None:
    """The high-specificity operating point of these data: the lowest threshold at which at most
    ``HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE`` of each source's negatives are called positive
    (:func:`pneumonitor.evaluation.classification.group_specificity_threshold`, sources with at least
    ``HIGH_SPECIFICITY_MIN_NEGATIVES`` negatives) and :func:`by_source` at it. ``None`` when no source holds enough
    negatives. Its 0-8 scores: :func:`scores_at`. Chosen on the evaluated data: a number for a validation split."""
    try:
        threshold = group_specificity_threshold(labels, scores, sources, HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE,
                                                HIGH_SPECIFICITY_MIN_NEGATIVES)
    except ValueError:
        return None
    above = np.asarray(scores, dtype=float) >= threshold
    return {"threshold": threshold, "max_false_positive_rate": HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE,
            "min_negatives": HIGH_SPECIFICITY_MIN_NEGATIVES,
            "sensitivity": float(np.mean(above[np.asarray(labels) == 1])),
            "by_source": by_source(labels, scores, sources, threshold, scores_at(threshold, scores, totals, positives),
                                   patients, n_bootstrap, seed)}


def scores_at(threshold: float, probabilities: Sequence[float], totals: Sequence[float],
              positives: Sequence[int]) -> list[float] | None:
    """The 0-8 scores the system reports at a classification ``threshold`` other than analyze's: 0 below it, the
    analyzed score at or above it. Known only when analyze called every image at or above ``threshold`` positive
    (``positives``: its ``positive`` column), i.e. scored them; ``None`` otherwise (a lower threshold than analyze's:
    the images between were never scored)."""
    above = np.asarray(probabilities, dtype=float) >= threshold
    if not np.all(np.asarray(positives)[above] == 1):
        return None
    return [float(t) if a else 0.0 for t, a in zip(totals, above)]


def regate(row: dict[str, Any], threshold: float | None) -> tuple[dict[str, Any], bool]:
    """``row`` as the system reports it at the evaluated classification ``threshold`` rather than analyze's, and
    whether it is known: an image analyze scored (``positive`` 1) whose probability is below ``threshold`` reports no
    pneumonia (scores and ratios 0, an empty pneumonia mask); an image analyze called negative at or above
    ``threshold`` was never scored (False: its zeros are analyze's gate, not this threshold's). ``None``: as analyzed."""
    if threshold is None or not _finite(row.get("pneumonia_probability")) or not _finite(row.get("positive")):
        return row, True
    above = float(row["pneumonia_probability"]) >= threshold
    if above and int(row["positive"]) == 0:
        return row, False
    if not above and int(row["positive"]) == 1:
        zero = {k: 0.0 for k in ("score_total", "score_right", "score_left", "ratio_total", "ratio_right", "ratio_left")
                if _finite(row.get(k))}
        return {**row, **zero, "positive": 0, "gated_out": True}, True
    return row, True


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
    comparisons: dict[str, dict[str, Any]] = {}  # each model number against its baseline, resampled together
    resampling = {"n_bootstrap": settings.n_bootstrap, "seed": settings.seed}
    intensities: dict[str, float] = {}  # each image is read once for both brightness baselines

    def intensity_of(image: str) -> float:
        if image not in intensities:
            intensities[image] = mean_intensity(image)
        return intensities[image]

    # classification
    cls = [(item["label"], row["pneumonia_probability"], item.get("source"), item.get("patient_id"),
            row.get("score_total"), row["image"], int(row["positive"]) if _finite(row.get("positive")) else -1)
           for item, row in matched.pairs if item.get("label") in (0, 1) and _finite(row.get("pneumonia_probability"))]
    if "classification" in tasks and cls and len({c[0] for c in cls}) == 2:
        labels, scores, sources, patients, totals, images, positives = zip(*cls)
        groups = _groups(patients, images)
        result = evaluate_classification(labels, scores, settings.threshold, settings.n_bootstrap, settings.seed,
                                         groups=groups)
        metrics["classification"] = result.to_dict()
        if settings.threshold_rule:
            metrics["classification"]["threshold_rule"] = settings.threshold_rule
        totals = [float(t) if _finite(t) else math.nan for t in totals]
        if len({source for source in sources if source}) > 1:
            metrics["classification"]["by_source"] = by_source(
                labels, scores, sources, result.threshold, scores_at(result.threshold, scores, totals, positives),
                groups, settings.n_bootstrap, settings.seed)
            high = high_specificity_point(labels, scores, sources, totals, positives, groups, settings.n_bootstrap,
                                          settings.seed)
            if high:
                metrics["classification"]["high_specificity"] = high
        intensity = [intensity_of(image) for image in images]
        comparisons["classification_auc"] = _auc_comparison(labels, scores, intensity, groups, resampling,
                                                            baseline_best_direction=True)
        metrics.setdefault("baselines", {})["classification_auc_mean_intensity"] = \
            comparisons["classification_auc"]["baseline"]["value"]
    elif "classification" in tasks and cls:
        metrics["classification"] = {"skipped": "the reference holds a single class: no ROC"}

    # severity, involvement and the pneumonia mask as the system reports them at the evaluated threshold (it may
    # differ from analyze's: a threshold chosen on these data, or another operating point)
    evaluated = metrics.get("classification", {}).get("threshold", settings.threshold) \
        if settings.gate_by_classification else None
    regated = [regate(row, evaluated) for _, row in matched.pairs]
    regated_pairs = [(item, row) for (item, _), (row, _) in zip(matched.pairs, regated)]
    unscored = sum(not known for _, known in regated)
    if unscored:
        metrics["unscored_at_threshold"] = {
            "n": unscored, "threshold": evaluated,
            "note": f"{unscored} image(s) at or above the evaluated threshold {evaluated:.4g} were called negative by "
                    "analyze (a higher threshold): their severity, involvement and pneumonia mask are analyze's "
                    "empty ones; analyze again at this threshold to measure them"}
        LOGGER.warning("%s: %s", name, metrics["unscored_at_threshold"]["note"])

    # segmentation (lungs, pneumonia) and localization need per-image files
    lung_scores, pneumonia_scores = [], []
    heatmaps: list[np.ndarray | None] = []
    truths: list[list[list[float]]] = []
    dice_sweep: list[list[float]] = []
    dice_pairs: list[tuple[float, float, Any, str]] = []  # (mask Dice, whole-lung Dice, patient, image)
    reference_area_dice: list[float] = []  # the heatmap's placement at the reference's own area (a diagnostic)
    severity_sweep: list[tuple[float, list[int]]] = []  # (reference, score_total per threshold)
    for index, (item, row) in enumerate(tqdm(matched.pairs, desc=f"{name}: masks", unit="img", leave=False)):
        record = per_image[index]
        maps = ResultMaps(matched, row)
        if "severity" in tasks and _finite(item.get("severity")) and _finite(row.get("score_total")):
            gate = metrics.get("classification", {}).get("threshold", settings.threshold)
            if settings.gate_by_classification and float(row["pneumonia_probability"]) < gate:
                scores = [0] * len(SEVERITY_SWEEP_THRESHOLDS)  # below the evaluated threshold: no pneumonia
            else:
                scores = sweep_scores(maps.heatmap, maps.lung_labels, SEVERITY_SWEEP_THRESHOLDS)
            if scores is not None:
                severity_sweep.append((float(item["severity"]), scores))
        if "lung_segmentation" in tasks and item.get("lung_mask"):
            if maps.lung_labels is not None:
                reference = read_gray(item["lung_mask"])
                ignore_value = item.get("lung_mask_ignore_value")
                ignore = reference == int(ignore_value) if ignore_value is not None else None
                dice, jaccard = overlap(maps.lung_labels, reference, ignore)
                lung_scores.append((dice, jaccard))
                record.update(lung_dice=dice, lung_jaccard=jaccard)
        if "pneumonia_segmentation" in tasks and item.get("mask"):
            pred_path = matched.result_path(row, "pneumonia_mask")
            if pred_path is not None and pred_path.is_file():
                reference_mask = read_gray(item["mask"])
                predicted_mask = read_gray(pred_path)
                if regated[index][0].get("gated_out"):  # below the evaluated threshold: no pneumonia reported
                    predicted_mask = np.zeros_like(predicted_mask)
                dice, jaccard = overlap(predicted_mask, reference_mask)
                pneumonia_scores.append((dice, jaccard))
                record.update(pneumonia_dice=dice, pneumonia_jaccard=jaccard)
                labels, heat = maps.lung_labels, maps.heatmap
                lungs = None if labels is None else labels > 0
                if lungs is not None:  # baseline: the whole lung is pneumonia
                    dice_pairs.append((dice, overlap(lungs, reference_mask)[0], item.get("patient_id"), item["image"]))
                if heat is not None and lungs is not None and heat.shape == reference_mask.shape == lungs.shape:
                    dice_sweep.append([overlap((heat >= t) & lungs, reference_mask)[0] for t in DICE_SWEEP_THRESHOLDS])
                    right, left = labels == RIGHT_LUNG_VALUE, labels == LEFT_LUNG_VALUE
                    if right.any() and left.any():  # analyze's lung labels: the area the reference gives
                        placed = overlap(reference_area_region(heat, right, left, reference_mask), reference_mask)[0]
                        reference_area_dice.append(placed)
                        record.update(pneumonia_dice_reference_area=placed)
        # mix items with has_localization == 0 are positives whose location is unknown: their [] is not a truth
        if "localization" in tasks and isinstance(item.get("boxes"), list) and item.get("has_localization", 1) != 0:
            heatmap = maps.heatmap
            if heatmap is None:
                continue
            boxes = _scale_boxes(item["boxes"], _reference_shape(item), heatmap.shape)
            called_negative = settings.gate_by_classification and regated[index][0].get("positive") == 0
            heatmaps.append(None if called_negative else heatmap)
            truths.append(boxes)
    for key, scores in (("lung_segmentation", lung_scores), ("pneumonia_segmentation", pneumonia_scores)):
        if scores:
            metrics[key] = {"dice": vars(mean_sd([s[0] for s in scores])),
                            "jaccard": vars(mean_sd([s[1] for s in scores]))}
    if dice_pairs:
        dice, whole, patients, images = zip(*dice_pairs)
        metrics.setdefault("baselines", {})["pneumonia_dice_whole_lung"] = vars(mean_sd(whole))
        comparisons["pneumonia_dice"] = compare_to_baseline(
            {"model": dice, "baseline": whole}, lambda c: float(np.mean(c["model"])),
            lambda c: float(np.mean(c["baseline"])), higher_is_better=True, groups=_groups(patients, images),
            **resampling).to_dict()
    if reference_area_dice:
        metrics.setdefault("pneumonia_segmentation", {})["reference_area"] = {"dice": vars(mean_sd(reference_area_dice))}
    if severity_sweep:
        reference = np.asarray([r for r, _ in severity_sweep])
        predicted = np.asarray([scores for _, scores in severity_sweep], dtype=float)  # [images, thresholds]
        mae = np.abs(predicted - reference[:, None]).mean(axis=0)
        bias = (predicted - reference[:, None]).mean(axis=0)
        best_index = int(np.lexsort((np.abs(bias), mae))[0])  # lowest MAE, then smallest |bias|
        metrics.setdefault("severity_sweep", {}).update({
            "threshold": list(SEVERITY_SWEEP_THRESHOLDS), "mae": [float(v) for v in mae],
            "bias": [float(v) for v in bias], "images": len(severity_sweep),
            "best_threshold": float(SEVERITY_SWEEP_THRESHOLDS[best_index]), "best_mae": float(mae[best_index]),
            "best_bias": float(bias[best_index]),
        })
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
    pred_total, ref_total, severity_sources, severity_patients, severity_images = [], [], [], [], []
    if "severity" in tasks:
        for index, (item, row) in enumerate(regated_pairs):
            if _finite(item.get("severity")) and _finite(row.get("score_total")):
                pred_total.append(row["score_total"])
                ref_total.append(float(item["severity"]))
                severity_sources.append(item.get("source"))
                severity_patients.append(item.get("patient_id"))
                severity_images.append(row["image"])
                per_image[index].update(severity_reference=float(item["severity"]), severity_predicted=row["score_total"])
        if pred_total:
            block: dict[str, Any] = {
                "total": {**agreement(pred_total, ref_total).to_dict(),
                          "bias": float(np.mean(np.subtract(pred_total, ref_total)))},
                "confusion_matrix": confusion_matrix(pred_total, ref_total).tolist(),
            }
            if len(set(severity_sources)) > 1:
                block["by_source"] = agreement_by_source(pred_total, ref_total, severity_sources)
            intensity = [intensity_of(image) for image in severity_images]
            columns = {"predicted": np.asarray(pred_total, dtype=float), "reference": np.asarray(ref_total),
                       "intensity": np.asarray(intensity, dtype=float)}
            groups = _groups(severity_patients, severity_images)
            comparisons["severity_mae"] = compare_to_baseline(
                columns, _mae, _mae_of_reference_mean, higher_is_better=False, groups=groups, **resampling).to_dict()
            metrics.setdefault("baselines", {}).update({
                "severity_mae_reference_mean": comparisons["severity_mae"]["baseline"]["value"],
                "severity_r_mean_intensity": agreement(intensity, ref_total).pearson_r,
            })
            comparisons["severity_r"] = compare_to_baseline(
                columns, lambda c: _pearson(c["predicted"], c["reference"]),
                lambda c: abs(_pearson(c["intensity"], c["reference"])), higher_is_better=True, groups=groups,
                **resampling).to_dict()
            block["total"]["bias_ci"] = vars(bootstrap_estimate(
                columns, lambda c: float(np.mean(c["predicted"] - c["reference"])), groups, **resampling))
            for side in ("right", "left"):
                involved = [(item, row) for item, row in regated_pairs
                            if _finite(item.get(f"involvement_{side}")) and _finite(row.get(f"ratio_{side}"))]
                ratios = [(row[f"ratio_{side}"], item[f"involvement_{side}"]) for item, row in involved]
                scores = [(row[f"score_{side}"], item[f"severity_{side}"]) for item, row in regated_pairs
                          if _finite(item.get(f"severity_{side}")) and _finite(row.get(f"score_{side}"))]
                if ratios:
                    pred, ref = np.asarray(ratios).T
                    compared = comparisons[f"involvement_{side}_mae"] = compare_to_baseline(
                        {"predicted": pred, "reference": ref}, _mae, _mae_of_reference_mean, higher_is_better=False,
                        groups=_groups([item.get("patient_id") for item, _ in involved],
                                       [item["image"] for item, _ in involved]),
                        **resampling).to_dict()
                    block[f"involvement_{side}"] = {"n": len(ratios), "mae_percent": compared["model"]["value"],
                                                    "agreement": agreement(pred, ref).to_dict()}
                    metrics.setdefault("baselines", {}).update({
                        f"involvement_{side}_mae_reference_mean": compared["baseline"]["value"],
                        f"involvement_{side}_mae_whole_lung": float(np.mean(np.abs(100.0 - ref))),
                    })
                if scores:
                    pred, ref = np.asarray(scores).T
                    block[f"score_{side}"] = agreement(pred, ref).to_dict()
            metrics["severity"] = block
    clinical = clinical_course_metrics(replace(matched, pairs=regated_pairs), **resampling)
    if clinical:
        metrics["clinical_course"] = clinical
        comparisons.update({f"{outcome}_auc": entry["score_vs_probability"] for outcome, entry in clinical.items()
                            if "score_vs_probability" in entry})
    if comparisons:
        metrics["baseline_comparisons"] = comparisons
    return Evaluation(name=name, metrics=metrics, per_image=per_image, severity_pairs=(pred_total, ref_total))


def mean_intensity(image: str) -> float:
    """Mean gray value of an image file in [0, 1] (the brightness baseline); NaN when it cannot be read as a
    bitmap (e.g. a DICOM, or a reference path on another machine)."""
    try:
        pixels = read_gray(image)
    except (OSError, ValueError):
        return math.nan
    return float(pixels.astype(np.float64).mean() / (65535.0 if pixels.dtype == np.uint16 else 255.0))


def _groups(patients: Sequence[Any], images: Sequence[str]) -> list[str] | None:
    """Bootstrap clusters: each item's patient, or its own image where the reference has no patient id; None (resample
    images) when no item has one."""
    if not any(patients):
        return None
    return [str(patient) if patient else f"image:{image}" for patient, image in zip(patients, images)]


def _mae(columns: dict[str, np.ndarray]) -> float:
    return float(np.mean(np.abs(columns["predicted"] - columns["reference"])))


def _mae_of_reference_mean(columns: dict[str, np.ndarray]) -> float:
    """The trivial baseline: predicting the (resampled) reference's own mean for every image."""
    reference = columns["reference"]
    return float(np.mean(np.abs(reference - reference.mean())))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN where it is undefined (fewer than 3 items, a constant column)."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _auc_or_nan(labels: Sequence[int], values: Sequence[float], best_direction: bool = False) -> float:
    """ROC AUC over the items with a finite value; NaN where one class is absent (a resample can hold one);
    ``best_direction``: max(AUC, 1 - AUC), for a baseline score, which gets its best chance."""
    y, v = np.asarray(labels, dtype=np.int64), np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    auc = float(rank_auc(y[keep], v[keep]))
    return max(auc, 1.0 - auc) if best_direction and math.isfinite(auc) else auc


def _auc_comparison(labels: Sequence[int], values: Sequence[float], baseline_values: Sequence[float],
                    groups: list[str] | None, resampling: dict[str, int],
                    baseline_best_direction: bool = False) -> dict[str, Any]:
    """The AUC of ``values`` against that of ``baseline_values`` for the same labels, resampled together
    (:func:`~pneumonitor.bootstrap.compare_to_baseline`); too few to tell when the rarer class has fewer than
    ``MIN_UNITS`` images (one death says nothing about an AUC, however many survivors)."""
    labels = np.asarray(labels, dtype=np.int64)
    n_positive = int(labels.sum())
    return compare_to_baseline(
        {"label": labels, "model": values, "baseline": baseline_values}, lambda c: _auc_or_nan(c["label"], c["model"]),
        lambda c: _auc_or_nan(c["label"], c["baseline"], best_direction=baseline_best_direction),
        higher_is_better=True, groups=groups, supported=min(n_positive, labels.size - n_positive) >= MIN_UNITS,
        **resampling).to_dict()


class ResultMaps:
    """One analyzed image's heatmap (float in [0, 1]) and lung-label image (right lung = 255, left = 128, as
    ``pneumonitor analyze`` writes them), each read from its PNG at most once and only when asked for; None when
    the file is missing."""

    def __init__(self, matched: MatchedSet, row: dict[str, Any]):
        self._matched, self._row = matched, row

    def _read(self, column: str) -> np.ndarray | None:
        path = self._matched.result_path(self._row, column)
        return read_gray(path) if path is not None and path.is_file() else None

    @cached_property
    def heatmap(self) -> np.ndarray | None:
        pixels = self._read("heatmap")
        return None if pixels is None else pixels.astype(np.float32) / 255.0

    @cached_property
    def lung_labels(self) -> np.ndarray | None:
        return self._read("lung_mask")


def sweep_scores(heatmap: np.ndarray | None, lung_labels: np.ndarray | None,
                 thresholds: Sequence[float]) -> list[int] | None:
    """The 0-8 score of one analyzed image at each heatmap threshold (the paper's rule), from its
    :class:`ResultMaps`; None when either is missing, their sizes differ or a lung is missing."""
    if heatmap is None or lung_labels is None or heatmap.shape != lung_labels.shape:
        return None
    right, left = lung_labels == RIGHT_LUNG_VALUE, lung_labels == LEFT_LUNG_VALUE
    if not right.any() or not left.any():
        return None
    return [lung_score(pneumonia_ratio(heatmap >= t, right)) + lung_score(pneumonia_ratio(heatmap >= t, left))
            for t in thresholds]


def clinical_course_metrics(matched: MatchedSet, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Outputs against the clinical course (reference ``icu_at_exam``, ``died``): per outcome, n per group, the mean
    ``score_total``/``ratio_total``/probability per group and the AUC of each for the outcome; and the score's AUC
    against the probability's (``score_vs_probability``: does the severity score say more about the course than the
    classifier alone?), resampled together over patients (:func:`~pneumonitor.bootstrap.compare_to_baseline`)."""
    block: dict[str, Any] = {}
    for outcome in ("icu_at_exam", "died"):
        kept = [(item, row) for item, row in matched.pairs
                if item.get(outcome) in (0, 1) and _finite(row.get("score_total"))]
        if not kept:
            continue
        y = np.asarray([int(item[outcome]) for item, _ in kept])
        entry: dict[str, Any] = {"n": len(kept), "n_outcome": int(y.sum())}
        columns = {}
        for column in ("score_total", "ratio_total", "pneumonia_probability"):
            values = columns[column] = np.asarray([float(row[column]) for _, row in kept])
            entry[column] = {"mean_with": float(values[y == 1].mean()) if y.any() else None,
                             "mean_without": float(values[y == 0].mean()) if (1 - y).any() else None,
                             "auc": float(roc_auc(y, values)) if 0 < y.sum() < y.size else None}
        if 0 < y.sum() < y.size:
            entry["score_vs_probability"] = _auc_comparison(
                y, columns["score_total"], columns["pneumonia_probability"],
                _groups([item.get("patient_id") for item, _ in kept], [item.get("image") for item, _ in kept]),
                {"n_bootstrap": n_bootstrap, "seed": seed})
        block[outcome] = entry
    return block


def operating_point(metrics: dict[str, Any]) -> dict[str, Any]:
    """The operating point an evaluation of a validation split supports, for ``inference.json``.

    ``classification_threshold``: the ROC point nearest (0, 1) (paper Sec. V-B); ``operating_points``: that one as
    ``balanced`` and, when the data hold several sources, ``high-specificity`` (:func:`high_specificity_point`);
    ``heatmap_threshold``: the lowest
    0-8 score MAE against expert scores (at least ``MIN_OPERATING_POINT_IMAGES`` scored images), else the best
    pneumonia-mask Dice or RSNA mAP on at least as many images, else absent (a handful of images does not choose a
    threshold). ``operating_point_basis`` says what each came from (rule and image counts).

    Raises:
        ValueError: the metrics hold no classification result (nothing to choose from).
    """
    classification = metrics.get("classification", {})
    if "threshold" not in classification:
        raise ValueError("no classification metrics to choose a threshold from (the reference needs both classes)")
    chosen: dict[str, Any] = {"classification_threshold": round(float(classification["threshold"]), 4)}
    basis = [f"classification: {classification.get('threshold_rule', 'nearest (0,1)')}, n={classification.get('n')}"]
    high = classification.get("high_specificity")
    if high:
        chosen["operating_points"] = {"balanced": chosen["classification_threshold"],
                                      "high-specificity": float(high["threshold"])}
        basis.append(f"high-specificity: lowest threshold calling at most {high['max_false_positive_rate']:.0%} of "
                     f"each source's negatives positive (sources with >= {high['min_negatives']} negatives), "
                     f"sensitivity {high['sensitivity']:.2f}")
    sweep = metrics.get("pneumonia_segmentation", {}).get("heatmap_sweep")
    localization = metrics.get("localization", {})
    severity = metrics.get("severity_sweep", {})
    enough = MIN_OPERATING_POINT_IMAGES
    if sweep and sweep["images"] < enough:
        sweep = None
    if localization.get("images", 0) < enough:
        localization = {}
    if severity.get("images", 0) >= enough:
        chosen["heatmap_threshold"] = severity["best_threshold"]
        basis.append(f"heatmap: lowest 0-8 score MAE {severity['best_mae']:.2f} (bias {severity['best_bias']:+.2f}) "
                     f"against expert scores, n={severity['images']}")
    elif sweep:
        chosen["heatmap_threshold"] = sweep["best_threshold"]
        basis.append(f"heatmap: best mean Dice {sweep['best_dice']:.3f} of (heatmap>=t)∩lungs vs reference masks, "
                     f"n={sweep['images']}")
    elif localization.get("best_threshold") is not None:
        chosen["heatmap_threshold"] = localization["best_threshold"]
        basis.append(f"heatmap: best RSNA mAP {localization['best_map']:.3f}, n={localization['images']}")
    chosen["operating_point_basis"] = "; ".join(basis)
    return chosen


__all__ = ["DICE_SWEEP_THRESHOLDS", "GOAL_MIN_SENSITIVITY", "SEVERITY_SWEEP_THRESHOLDS", "by_source",
           "clinical_course_metrics", "mean_intensity", "sweep_scores", "ResultMaps", "Evaluation",
           "EvaluationSettings", "evaluate_matched", "high_specificity_point", "operating_point"]
