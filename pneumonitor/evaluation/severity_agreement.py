"""Agreement of predicted severity with reference scores (paper Fig. 10, Table IV).

* ``pearson_r`` and its two-sided ``p`` (``scipy.stats.pearsonr``);
* ``r2``: coefficient of determination of the prediction as an estimate of the reference,
  ``1 - sum((ref - pred)^2) / sum((ref - mean(ref))^2)`` (it penalizes bias and scale errors, so it can be below r^2
  and even negative; the paper's R^2 = 0.38 with r = 0.75 is of this kind); ``r_squared_fit`` is r^2 of the
  least-squares line ``predicted = slope * reference + intercept`` (drawn on the scatter plot);
* ``mae``: mean absolute error in score points;
* per data source (:func:`agreement_by_source`): the same, with the bias and the MAE of predicting that source's own
  reference mean, because a pooled r can hide a source the model never saw (a new hospital) on which it tracks the
  experts far worse;
* a 9x9 confusion matrix of predicted vs reference total scores (0-8); reference scores that are means of raters are
  rounded half up to the nearest integer and clipped to 0-8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

N_SCORES = 9  # total scores 0..8


@dataclass
class Agreement:
    """Agreement statistics between ``n`` predicted and reference values."""

    n: int
    pearson_r: float
    p_value: float
    r2: float
    r_squared_fit: float
    slope: float
    intercept: float
    mae: float

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(predicted: Sequence[float], reference: Sequence[float]) -> Agreement:
    """Pearson r (p), R^2, fit line and MAE of ``predicted`` against ``reference`` (pairs with a NaN are dropped)."""
    from scipy import stats

    pred = np.asarray(predicted, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if pred.shape != ref.shape:
        raise ValueError(f"{pred.size} predictions for {ref.size} reference values")
    keep = np.isfinite(pred) & np.isfinite(ref)
    pred, ref = pred[keep], ref[keep]
    n = int(pred.size)
    nan = float("nan")
    if n == 0:
        return Agreement(0, nan, nan, nan, nan, nan, nan, nan)
    mae = float(np.mean(np.abs(pred - ref)))
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    r2 = 1.0 - float(np.sum((ref - pred) ** 2)) / ss_tot if ss_tot > 0 else nan
    if n < 3 or np.ptp(pred) == 0 or np.ptp(ref) == 0:
        return Agreement(n, nan, nan, r2, nan, nan, nan, mae)
    r, p = stats.pearsonr(pred, ref)
    fit = stats.linregress(ref, pred)
    return Agreement(n, float(r), float(p), r2, float(fit.rvalue**2), float(fit.slope), float(fit.intercept), mae)


def agreement_by_source(predicted: Sequence[float], reference: Sequence[float],
                        sources: Sequence[str | None]) -> dict[str, dict]:
    """Per source (``None`` reads "unknown"): :func:`agreement` plus ``bias`` = mean(pred - ref),
    ``reference_mean`` and ``mae_reference_mean`` (the MAE of predicting the source's own reference mean: the
    trivial baseline on the same images)."""
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    names = np.asarray(["unknown" if source is None else str(source) for source in sources])
    if not pred.shape == ref.shape == names.shape:
        raise ValueError(f"{pred.size} predictions, {ref.size} reference values and {names.size} sources")
    table: dict[str, dict] = {}
    for name in sorted(set(names)):
        pick = (names == name) & np.isfinite(pred) & np.isfinite(ref)
        if not pick.any():
            continue
        row = agreement(pred[pick], ref[pick]).to_dict()
        row.update(bias=float(np.mean(pred[pick] - ref[pick])), reference_mean=float(ref[pick].mean()),
                   mae_reference_mean=float(np.mean(np.abs(ref[pick] - ref[pick].mean()))))
        table[name] = row
    return table


def round_scores(values: Sequence[float], n_scores: int = N_SCORES) -> np.ndarray:
    """Round half up and clip to 0..n_scores-1 (reference means of raters -> integer scores)."""
    array = np.asarray(values, dtype=np.float64)
    return np.clip(np.floor(array + 0.5), 0, n_scores - 1).astype(np.int64)


def confusion_matrix(predicted: Sequence[float], reference: Sequence[float], n_scores: int = N_SCORES) -> np.ndarray:
    """[n_scores, n_scores] counts; rows = reference score, columns = predicted score."""
    pred = np.asarray(predicted, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    keep = np.isfinite(pred) & np.isfinite(ref)
    matrix = np.zeros((n_scores, n_scores), dtype=np.int64)
    np.add.at(matrix, (round_scores(ref[keep], n_scores), round_scores(pred[keep], n_scores)), 1)
    return matrix


__all__ = ["Agreement", "N_SCORES", "agreement", "agreement_by_source", "confusion_matrix", "round_scores"]
