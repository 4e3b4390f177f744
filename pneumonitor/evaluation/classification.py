"""Pneumonia classification metrics (paper Table II, Fig. 8b): ROC, AUC with a bootstrap 95 % CI, and sensitivity,
specificity, accuracy and PPV (each with a CI) at the operating point nearest the ROC corner (0, 1).

Conventions: ``labels`` are 0/1, ``scores`` are probabilities in [0, 1]; an image is called positive when
``score >= threshold``. CIs are percentile bootstrap intervals (resampling with replacement, seeded) over images, or
over patients when ``groups`` (patient ids) are given: a cluster bootstrap draws patients and keeps all their
images, so a patient's several images do not count as independent evidence; resamples that hold a single class are
left out of the AUC (they have no AUC). The operating threshold is fixed
while resampling (the CI describes the rates at that threshold, not the threshold search).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from pneumonitor.bootstrap import Estimate, bootstrap_unit, percentile_interval, resample_indices


def _as_arrays(labels: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_curve(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for every distinct score used as threshold (``score >= t`` is positive).

    Returns:
        (fpr, tpr, thresholds), each [K+1]; the first point is (0, 0) with threshold +inf, the last (1, 1).
    """
    y, s = _as_arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC needs both positive and negative images")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], y.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(y_sorted)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve with ``monai.metrics.compute_roc_auc`` (ties count one half)."""
    import torch
    from monai.metrics import compute_roc_auc

    y, s = _as_arrays(labels, scores)
    if y.min() == y.max():
        raise ValueError("the AUC needs both positive and negative images")
    return float(compute_roc_auc(torch.as_tensor(s), torch.as_tensor(y)))


def best_sensitivity(labels: Sequence[int], scores: Sequence[float], max_false_positive_rate: float) -> float:
    """The highest sensitivity any threshold reaches while calling at most ``max_false_positive_rate`` of the
    negatives positive: the ROC's own best point, whatever threshold a model ships with. A threshold read off the
    evaluated data: a bound on what they allow, not an operating point (those are chosen on validation)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_false_positive_rate + 1e-12].max())  # (0, 0) always qualifies


def fewest_false_positives(labels: Sequence[int], scores: Sequence[float], min_sensitivity: float) -> float:
    """The smallest share of negatives called positive at any threshold reaching ``min_sensitivity`` (the
    counterpart of :func:`best_sensitivity`, with the same caveat)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(fpr[tpr >= min_sensitivity - 1e-12].min())  # (1, 1) always qualifies


def binormal_auc_needed(sensitivity: float, specificity: float) -> float:
    """The AUC of the equal-variance binormal ROC through (1 - ``specificity``, ``sensitivity``): what a model
    needs to meet both at one threshold, if its scores are two normal distributions of equal spread
    (``d' = z(sens) + z(spec)``, ``AUC = Phi(d' / sqrt 2)``)."""
    from scipy.stats import norm

    if not (0.0 < sensitivity < 1.0 and 0.0 < specificity < 1.0):
        raise ValueError(f"sensitivity and specificity must be in (0, 1), got {sensitivity}, {specificity}")
    return float(norm.cdf((norm.ppf(sensitivity) + norm.ppf(specificity)) / np.sqrt(2.0)))


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC along the last axis (vectorized; same value as ``roc_auc``). NaN rows where one class is absent.

    Args:
        labels, scores: [..., N] arrays (0/1 labels).
    """
    ranks = rankdata(scores, axis=-1)
    n_pos = labels.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    rank_sum = (ranks * labels).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def nearest_corner_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold whose ROC point is nearest (FPR, TPR) = (0, 1) (paper: 0.62 on its Dataset 1)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    distance = np.hypot(fpr, 1.0 - tpr)
    distance[0] = np.inf  # the +inf threshold calls nothing positive
    return float(thresholds[int(np.argmin(distance))])


def group_specificity_threshold(
    labels: Sequence[int], scores: Sequence[float], groups: Sequence[str | None],
    max_false_positive_rate: float = 0.10, min_negatives: int = 20, decimals: int = 4,
) -> float:
    """The lowest threshold (a multiple of ``10**-decimals``, so that it survives being stored rounded) at which no
    group's negatives are called positive (``score >= threshold``) more often than ``max_false_positive_rate``,
    counting the groups (data sources) that hold at least ``min_negatives`` negatives.

    Why per group: a pooled specificity lets easy negatives (pediatric, digitised films) hide the hard ones (NIH
    "no finding" radiographs); the project's goal is at most 10 % of the normals of *each* adult source.

    Raises:
        ValueError: no group holds ``min_negatives`` negatives, the rate is outside [0, 1), or only a threshold above
            1 would do (negatives scored 1.0).
    """
    if not 0.0 <= max_false_positive_rate < 1.0:
        raise ValueError(f"max_false_positive_rate must be in [0, 1), got {max_false_positive_rate}")
    y, s = _as_arrays(labels, scores)
    names = np.asarray([str(g) for g in groups])
    unit = 10.0 ** -decimals
    threshold = 0.0
    counted = 0
    for name in sorted(set(names[y == 0])):
        negatives = np.sort(s[(names == name) & (y == 0)])[::-1]
        if negatives.size < min_negatives:
            continue
        counted += 1
        allowed = int(np.floor(max_false_positive_rate * negatives.size + 1e-9))  # negatives that may stay positive
        if allowed < negatives.size:  # above the (allowed + 1)-th highest negative score
            threshold = max(threshold, (np.floor(negatives[allowed] / unit + 1e-6) + 1) * unit)
    if not counted:
        raise ValueError(f"no group holds {min_negatives} negatives: a specificity threshold needs them")
    if threshold > 1.0:  # probabilities: nothing in [0, 1] separates negatives scored 1.0
        raise ValueError(f"no threshold in [0, 1] calls at most {max_false_positive_rate:.0%} of every group's "
                         "negatives positive (too many score 1.0)")
    return round(float(threshold), decimals)


def rates(labels: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, accuracy, PPV along the last axis of 0/1 arrays (NaN where undefined)."""
    tp = (labels * predicted).sum(axis=-1)
    tn = ((1 - labels) * (1 - predicted)).sum(axis=-1)
    fp = ((1 - labels) * predicted).sum(axis=-1)
    fn = (labels * (1 - predicted)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "accuracy": (tp + tn) / labels.shape[-1],
            "ppv": tp / (tp + fp),
        }


def rate_interval(
    hits: Sequence[bool], groups: Sequence | None = None, n_bootstrap: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the share of ``hits`` (e.g. a source's normals called positive), over patients
    when ``groups`` (patient ids) are given (:func:`pneumonitor.bootstrap.resample_indices`), else over images."""
    hits = np.asarray(hits, dtype=np.float64).ravel()
    if hits.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = [hits[index].mean() for index in resample_indices(hits.size, groups, n_bootstrap, rng)]
    return percentile_interval(means, confidence)


@dataclass
class ClassificationResult:
    """Table II row: estimates with 95 % CIs at ``threshold``; ROC points for plotting."""

    n: int
    n_positive: int
    threshold: float
    threshold_rule: str
    bootstrap: str
    auc: Estimate
    sensitivity: Estimate
    specificity: Estimate
    accuracy: Estimate
    ppv: Estimate
    fpr: list[float]
    tpr: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_classification(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: Sequence | None = None,
) -> ClassificationResult:
    """All Table II metrics.

    Args:
        labels: [N] 0/1 reference labels.
        scores: [N] predicted pneumonia probabilities.
        threshold: operating threshold; None = the point nearest (0, 1) on these data.
        n_bootstrap: bootstrap resamples for the CIs.
        seed: seed of the resampling.
        confidence: CI level (0.95).
        groups: [N] patient ids: the CIs come from a patient-level (cluster) bootstrap; None: over images.
    """
    y, s = _as_arrays(labels, scores)
    rule = "given"
    if threshold is None:
        threshold, rule = nearest_corner_threshold(y, s), "nearest (0,1) on these data"
    predicted = (s >= threshold).astype(np.int64)
    point = {k: float(v) for k, v in rates(y, predicted).items()}
    auc = roc_auc(y, s)
    rng = np.random.default_rng(seed)
    if groups is None:
        index = rng.integers(0, y.size, size=(n_bootstrap, y.size))
        boot_y, boot_s, boot_p = y[index], s[index], predicted[index]
        boot = {"auc": rank_auc(boot_y, boot_s), **rates(boot_y, boot_p)}  # vectorised: one call for all
    else:
        samples = resample_indices(y.size, groups, n_bootstrap, rng)
        per_sample = [{"auc": rank_auc(y[i], s[i]), **rates(y[i], predicted[i])} for i in samples]
        boot = {name: np.asarray([float(row[name]) for row in per_sample]) for name in per_sample[0]}

    def estimate(name: str, value: float) -> Estimate:
        return Estimate(value, *percentile_interval(boot[name], confidence))

    fpr, tpr, _ = roc_curve(y, s)
    return ClassificationResult(
        n=int(y.size),
        n_positive=int(y.sum()),
        threshold=float(threshold),
        threshold_rule=rule,
        bootstrap=bootstrap_unit(int(y.size), groups),
        auc=estimate("auc", auc),
        sensitivity=estimate("sensitivity", point["sensitivity"]),
        specificity=estimate("specificity", point["specificity"]),
        accuracy=estimate("accuracy", point["accuracy"]),
        ppv=estimate("ppv", point["ppv"]),
        fpr=[float(v) for v in fpr],
        tpr=[float(v) for v in tpr],
    )


__all__ = [
    "ClassificationResult",
    "Estimate",
    "best_sensitivity",
    "binormal_auc_needed",
    "evaluate_classification",
    "fewest_false_positives",
    "group_specificity_threshold",
    "rate_interval",
    "nearest_corner_threshold",
    "rank_auc",
    "rates",
    "roc_auc",
    "roc_curve",
]
