"""Trend labels, trend agreement between two disease profiles, and the improved / stable / worse change rule.

Trend agreement follows Amer et al. 2020, Sec. V-C-3 (docs/monitoring.md): every time point after the first gets the label
``1`` if ``value / previous > 1`` and ``0`` otherwise; the agreement of two profiles of the same patient is the fraction
of time points (after the first) whose labels are equal. The paper reports 0.87 between CXR and CT.

Zero previous value: for non-negative quantities (ratios in percent, scores 0-8) ``value / previous > 1`` is the same
statement as ``value > previous`` whenever ``previous > 0``. We extend it to ``previous == 0`` the same way:
``x / 0`` with ``x > 0`` counts as an increase (label 1, the limit is +inf) and ``0 / 0`` as no increase (label 0).
Negative or non-finite values are rejected because the ratio rule has no meaning for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CHANGE_IMPROVED = "improved"
CHANGE_STABLE = "stable"
CHANGE_WORSE = "worse"


def _as_profile(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name}: a profile is a 1-D sequence of values in time order, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: profile contains NaN or infinite values: {array.tolist()}")
    if np.any(array < 0):
        raise ValueError(f"{name}: trend labels need non-negative values (ratios, scores), got {array.tolist()}")
    return array


def trend_labels(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Label each time point after the first: 1 if ``value / previous > 1`` else 0.

    Args:
        values: profile of one patient in time order, shape [T], non-negative (ratio in percent or score).

    Returns:
        int array of shape [T-1] with values in {0, 1}. ``previous == 0`` gives 1 when ``value > 0`` and 0 when
        ``value == 0`` (see the module docstring).
    """
    array = _as_profile(values, "values")
    previous, current = array[:-1], array[1:]
    # value / previous > 1  <=>  value > previous for previous > 0; the same comparison covers previous == 0.
    return (current > previous).astype(int)


def trend_agreement(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Accuracy of agreement between the trend labels of two profiles of the same patient (docs/monitoring.md).

    Args:
        a: first profile (e.g. predicted score_total), shape [T], non-negative, in time order.
        b: second profile at the same T time points (e.g. expert score or CT ratio), shape [T].

    Returns:
        fraction in [0, 1] of the T-1 transitions whose labels agree.

    Raises:
        ValueError: when the profiles differ in length, have fewer than 2 points, or hold negative/non-finite values.
    """
    labels_a, labels_b = trend_labels(a), trend_labels(b)
    if labels_a.shape != labels_b.shape:
        raise ValueError(f"profiles must have the same number of time points, got {len(a)} and {len(b)}")
    if labels_a.size == 0:
        raise ValueError("trend agreement needs at least 2 time points per profile")
    return float(np.mean(labels_a == labels_b))


@dataclass(frozen=True)
class PooledTrendAgreement:
    """Trend agreement pooled over patients: every transition of every patient counts once.

    Attributes:
        accuracy: agreeing transitions / all transitions, in [0, 1] (NaN when there is no transition).
        n_agree: number of agreeing transitions.
        n_transitions: number of transitions (sum over patients of T_p - 1).
        n_patients: number of patients with at least 2 time points.
        mean_per_patient: unweighted mean of the per-patient accuracies (NaN when no patient).
    """

    accuracy: float
    n_agree: int
    n_transitions: int
    n_patients: int
    mean_per_patient: float


def pooled_trend_agreement(pairs: Iterable[tuple[Sequence[float], Sequence[float]]]) -> PooledTrendAgreement:
    """Pool :func:`trend_agreement` over patients; pairs with fewer than 2 points are ignored.

    Args:
        pairs: one ``(a, b)`` pair of equal-length profiles per patient.
    """
    n_agree = n_transitions = 0
    per_patient: list[float] = []
    for a, b in pairs:
        if len(a) < 2:
            continue
        labels_a, labels_b = trend_labels(a), trend_labels(b)
        if labels_a.shape != labels_b.shape:
            raise ValueError(f"profiles must have the same number of time points, got {len(a)} and {len(b)}")
        agree = int(np.sum(labels_a == labels_b))
        n_agree += agree
        n_transitions += labels_a.size
        per_patient.append(agree / labels_a.size)
    accuracy = n_agree / n_transitions if n_transitions else float("nan")
    mean = float(np.mean(per_patient)) if per_patient else float("nan")
    return PooledTrendAgreement(float(accuracy), n_agree, n_transitions, len(per_patient), mean)


@dataclass(frozen=True)
class ChangeRule:
    """Rule that labels the change between two consecutive studies of a patient.

    A change is reported only when the two things a reader looks at agree and exceed the noise:

    * the total score (0-8, per-lung bins of 25 % involvement) moved by at least ``min_score_step`` in one direction,
      and
    * the total Pneumonia Ratio moved in the same direction by more than the margin (percentage points).

    Otherwise the label is ``stable``: a score that flips because the ratio crossed a bin edge by a hair, or a ratio
    that moved inside its score bin, is not called a change. The margin is ``ratio_margin`` or, when the model gives a
    per-study standard deviation of the total ratio, ``uncertainty_z * sqrt(sd_prev**2 + sd_cur**2)`` if that is larger.

    Attributes:
        ratio_margin: minimum |change| of the total ratio, percentage points (default 5).
        min_score_step: minimum |change| of the total score, score points (default 1).
        uncertainty_z: multiplier of the combined standard deviation (default 1.96, a 95 % two-sided interval).
    """

    ratio_margin: float = 5.0
    min_score_step: float = 1.0
    uncertainty_z: float = 1.96

    def __post_init__(self) -> None:
        if not (self.ratio_margin >= 0 and self.min_score_step > 0 and self.uncertainty_z >= 0):
            raise ValueError(f"invalid change rule {self}: margins must be >= 0 and the score step > 0")

    def margin(self, sd_previous: float | None = None, sd_current: float | None = None) -> float:
        """Margin in percentage points for one transition, given optional standard deviations of the two ratios."""
        if sd_previous is None or sd_current is None or not (np.isfinite(sd_previous) and np.isfinite(sd_current)):
            return self.ratio_margin
        return max(self.ratio_margin, self.uncertainty_z * float(np.hypot(sd_previous, sd_current)))

    def label(
        self,
        score_previous: float,
        score_current: float,
        ratio_previous: float,
        ratio_current: float,
        sd_previous: float | None = None,
        sd_current: float | None = None,
    ) -> str:
        """Return ``improved``, ``stable`` or ``worse`` for the transition from the previous to the current study."""
        values = (score_previous, score_current, ratio_previous, ratio_current)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"change label needs finite scores and ratios, got {values}")
        delta_score = score_current - score_previous
        delta_ratio = ratio_current - ratio_previous
        margin = self.margin(sd_previous, sd_current)
        if delta_score >= self.min_score_step and delta_ratio > margin:
            return CHANGE_WORSE
        if delta_score <= -self.min_score_step and delta_ratio < -margin:
            return CHANGE_IMPROVED
        return CHANGE_STABLE
