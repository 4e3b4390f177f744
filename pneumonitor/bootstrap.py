"""Percentile bootstrap intervals over patients (cluster bootstrap), for any statistic and for a model's number
against its trivial baseline on the same images.

A cluster bootstrap draws patients with replacement and keeps every image of each drawn patient, so a patient's
several images do not count as independent evidence; without patient ids it draws images.

A model's number and its baseline's (the 0-8 score's MAE and that of predicting the reference mean; the pneumonia
mask's Dice and that of calling the whole lung) are measured on the same images, so they are resampled **together**:
each resample recomputes both and their difference. Their separate intervals overlap far more often than the
difference's interval holds 0, so only the difference says whether the model beats the baseline on these data:
``beats`` when the whole interval of ``model - baseline`` lies on the model's better side, ``worse`` when it lies on
the other, ``not distinguishable`` otherwise, ``too few to tell`` below ``MIN_UNITS`` patients. A baseline that is
recomputed per resample (the reference mean) is a function of the resample, as it is of the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: what :func:`compare_to_baseline` calls its outcomes
BEATS, WORSE, NOT_DISTINGUISHABLE, TOO_FEW = "beats", "worse", "not distinguishable", "too few to tell"
#: fewest resampled units (patients, or images without patient ids) an interval is drawn from: resampling one patient
#: gives the same number every time, an interval of width 0 that says nothing
MIN_UNITS = 5

Columns = Mapping[str, np.ndarray]
Statistic = Callable[[Columns], float]


@dataclass
class Estimate:
    """A point estimate with its 95 % CI (``low``, ``high``); NaN when undefined."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 2) -> str:
        """``0.93 [0.92, 0.94]`` as in the paper's tables; ``0.93 [no CI]`` where the interval is undefined."""
        def missing(number: float | None) -> bool:  # NaN, or None as metrics.json stores NaN
            return number is None or bool(np.isnan(number))

        if missing(self.value):
            return "n/a"
        if missing(self.low) or missing(self.high):
            return f"{self.value:.{digits}f} [no CI]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def cluster_bootstrap_indices(groups: Sequence, n_bootstrap: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_bootstrap`` index arrays, each drawing as many groups (patients) as there are, with replacement, and taking
    every member of each drawn group (so the resamples differ in length)."""
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    samples = []
    for _ in range(n_bootstrap):
        drawn = rng.integers(0, len(members), size=len(members))
        samples.append(np.concatenate([members[g] for g in drawn]))
    return samples


def resample_indices(n: int, groups: Sequence | None, n_bootstrap: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays of ``n_bootstrap`` resamples of ``n`` items: over patients when ``groups`` are given
    (:func:`cluster_bootstrap_indices`), else over items."""
    if groups is None:
        return list(rng.integers(0, n, size=(n_bootstrap, n)))
    _check_groups(n, groups)
    return cluster_bootstrap_indices(groups, n_bootstrap, rng)


def _check_groups(n: int, groups: Sequence) -> None:
    if len(groups) != n:
        raise ValueError(f"{len(groups)} patient ids for {n} items")


def resampled_units(n: int, groups: Sequence | None) -> int:
    """How many units a resample draws: patients when ``groups`` are given, else items."""
    if groups is None:
        return n
    _check_groups(n, groups)
    return len(set(map(str, groups)))


def bootstrap_unit(n: int, groups: Sequence | None) -> str:
    """What was resampled, for the tables: ``patients (n=20)`` or ``images (n=160)``."""
    units = resampled_units(n, groups)
    return f"patients (n={units})" if groups is not None else f"images (n={units})"


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of the finite ``values`` (NaN, NaN when none is finite)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def _columns(columns: Mapping[str, Sequence]) -> tuple[dict[str, np.ndarray], int]:
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    lengths = {array.shape[0] for array in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns differ in length: { {name: a.shape[0] for name, a in arrays.items()} }")
    return arrays, lengths.pop()


def _take(arrays: Columns, index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[index] for name, array in arrays.items()}


def bootstrap_estimate(columns: Mapping[str, Sequence], statistic: Statistic, groups: Sequence | None = None,
                       n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """``statistic(columns)`` with its percentile bootstrap interval; ``columns`` are per-image arrays of one length,
    resampled together (over patients when ``groups`` are given). Resamples where the statistic is undefined (NaN:
    a constant column's r) are left out; fewer than ``MIN_UNITS`` units give no interval (NaN)."""
    arrays, n = _columns(columns)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    if resampled_units(n, groups) < MIN_UNITS:
        return Estimate(float(statistic(arrays)), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = [statistic(_take(arrays, index)) for index in resample_indices(n, groups, n_bootstrap, rng)]
    return Estimate(float(statistic(arrays)), *percentile_interval(values, confidence))


@dataclass
class Comparison:
    """A model's number against its trivial baseline on the same images, resampled together."""

    n: int
    bootstrap: str
    higher_is_better: bool
    model: Estimate
    baseline: Estimate
    difference: Estimate  # model - baseline
    verdict: str  # BEATS, WORSE, NOT_DISTINGUISHABLE or TOO_FEW

    def to_dict(self) -> dict:
        return asdict(self)


def compare_to_baseline(columns: Mapping[str, Sequence], model: Statistic, baseline: Statistic,
                        higher_is_better: bool, groups: Sequence | None = None, n_bootstrap: int = 1000,
                        seed: int = 0, confidence: float = 0.95, supported: bool = True) -> Comparison:
    """``model(columns)`` against ``baseline(columns)`` with intervals of both and of their difference, from the
    same resamples (over patients when ``groups`` are given); the verdict reads the difference's interval
    (``TOO_FEW``, and no intervals, below ``MIN_UNITS`` units, or when the caller says the data cannot support one:
    ``supported=False``, e.g. an AUC whose rarer class has fewer than ``MIN_UNITS`` images)."""
    arrays, n = _columns(columns)
    point_model, point_baseline = float(model(arrays)), float(baseline(arrays))
    if not supported or resampled_units(n, groups) < MIN_UNITS:
        nan = float("nan")
        return Comparison(n=n, bootstrap=bootstrap_unit(n, groups), higher_is_better=higher_is_better,
                          model=Estimate(point_model, nan, nan), baseline=Estimate(point_baseline, nan, nan),
                          difference=Estimate(point_model - point_baseline, nan, nan), verdict=TOO_FEW)
    rng = np.random.default_rng(seed)
    pairs = np.asarray([(model(sample), baseline(sample)) for sample in
                        (_take(arrays, index) for index in resample_indices(n, groups, n_bootstrap, rng))]
                       ).reshape(-1, 2)
    low, high = percentile_interval(pairs[:, 0] - pairs[:, 1], confidence)
    better_side = low > 0 if higher_is_better else high < 0
    worse_side = high < 0 if higher_is_better else low > 0
    verdict = BEATS if better_side else WORSE if worse_side else NOT_DISTINGUISHABLE
    return Comparison(
        n=n, bootstrap=bootstrap_unit(n, groups), higher_is_better=higher_is_better,
        model=Estimate(point_model, *percentile_interval(pairs[:, 0], confidence)),
        baseline=Estimate(point_baseline, *percentile_interval(pairs[:, 1], confidence)),
        difference=Estimate(point_model - point_baseline, low, high),
        verdict=verdict if np.isfinite([low, high]).all() else NOT_DISTINGUISHABLE)


__all__ = [
    "BEATS", "MIN_UNITS", "NOT_DISTINGUISHABLE", "TOO_FEW", "WORSE", "Comparison", "Estimate", "bootstrap_estimate",
    "bootstrap_unit", "cluster_bootstrap_indices", "compare_to_baseline", "percentile_interval", "resample_indices",
    "resampled_units",
]
