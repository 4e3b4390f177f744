"""Compare two disease profiles per patient by trend agreement, from tables (e.g. model scores vs expert scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumonitor.bootstrap import compare_to_baseline
from pneumonitor.monitoring.profiles import natural_key
from pneumonitor.monitoring.studies import MonitoringInputError
from pneumonitor.monitoring.trend import PooledTrendAgreement, pooled_trend_agreement, trend_agreement, trend_labels


def _sortable_time(values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers
    stamps = pd.to_datetime(values, errors="coerce", format="mixed")
    if stamps.notna().all():
        return stamps
    bad = values[numbers.isna() & stamps.isna()].head(3).tolist()
    raise MonitoringInputError(f"time values that are neither numbers nor dates: {bad}")


def join_profiles(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame | None,
    a_column: str,
    b_column: str,
    patient_column: str = "patient_id",
    time_column: str = "day",
) -> pd.DataFrame:
    """Put the two profiles side by side: columns ``patient``, ``time``, ``a``, ``b``; rows with both values only.

    With ``table_b`` None both columns come from ``table_a``; otherwise the tables are joined on patient and time,
    and a (patient, time) pair that occurs twice in either table is an error (it would pair studies arbitrarily).
    """
    for name, table, needed in (("first", table_a, (patient_column, time_column, a_column)),
                                ("second", table_b if table_b is not None else table_a,
                                 (patient_column, time_column, b_column))):
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise MonitoringInputError(f"the {name} table lacks column(s) {', '.join(missing)}; "
                                       f"it has {', '.join(map(str, table.columns))}")
    keys = [patient_column, time_column]
    if table_b is None:
        joined = table_a[[*keys, a_column, b_column]].copy()
        joined.columns = ["patient", "time", "a", "b"]
    else:
        for name, table in (("first", table_a), ("second", table_b)):
            duplicated = table[table.duplicated(keys, keep=False)]
            if not duplicated.empty:
                example = duplicated[keys].iloc[0].tolist()
                raise MonitoringInputError(f"the {name} table has several rows for patient/time {example}")
        a = table_a[[*keys, a_column]].rename(columns={a_column: "a"})
        b = table_b[[*keys, b_column]].rename(columns={b_column: "b"})
        a[keys] = a[keys].astype(str)
        b[keys] = b[keys].astype(str)
        joined = a.merge(b, on=keys, how="inner")
        joined.columns = ["patient", "time", "a", "b"]
    joined["patient"] = joined["patient"].astype(str)
    joined["a"] = pd.to_numeric(joined["a"], errors="coerce")
    joined["b"] = pd.to_numeric(joined["b"], errors="coerce")
    joined = joined.dropna(subset=["a", "b"])
    joined = joined.assign(_t=_sortable_time(joined["time"].astype(str))) if len(joined) else joined.assign(_t=[])
    return joined.sort_values(["patient", "_t"], kind="stable").drop(columns="_t").reset_index(drop=True)


def compare_profiles(joined: pd.DataFrame) -> tuple[pd.DataFrame, PooledTrendAgreement]:
    """Trend agreement per patient and pooled, from the output of :func:`join_profiles`.

    Returns:
        (per-patient table with columns ``patient``, ``n_points``, ``n_transitions``, ``agreement`` (NaN below 2
        points), pooled result over patients with at least 2 points).
    """
    rows, pairs = [], []
    for patient in sorted(joined["patient"].unique(), key=natural_key):
        part = joined[joined["patient"] == patient]
        a, b = part["a"].to_numpy(float), part["b"].to_numpy(float)
        value = trend_agreement(a, b) if len(part) >= 2 else np.nan
        rows.append({"patient": patient, "n_points": len(part), "n_transitions": max(len(part) - 1, 0),
                     "agreement": value})
        pairs.append((a, b))
    per_patient = pd.DataFrame(rows, columns=["patient", "n_points", "n_transitions", "agreement"])
    return per_patient, pooled_trend_agreement(pairs)


def transitions(joined: pd.DataFrame) -> pd.DataFrame:
    """One row per transition (a time point after a patient's first) of the output of :func:`join_profiles`:
    ``patient``, the trend labels ``a`` and ``b`` (1: the value rose)."""
    rows = []
    for patient, part in joined.groupby("patient", sort=False):
        if len(part) >= 2:
            for a, b in zip(trend_labels(part["a"].to_numpy(float)), trend_labels(part["b"].to_numpy(float))):
                rows.append({"patient": patient, "a": int(a), "b": int(b)})
    return pd.DataFrame(rows, columns=["patient", "a", "b"])


def against_constant_profiles(joined: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Trend agreement of profile A with B beside the trivial profiles on the same transitions: one that always rises
    (agrees wherever B rose) and one that never does; and A against the better of the two, both recomputed on the
    same resamples of patients (:func:`~pneumonitor.bootstrap.compare_to_baseline`), whose verdict says
    whether A's trend beats a constant guess on these patients. Empty when there is no transition."""
    table = transitions(joined)
    if table.empty:
        return {}
    rose = table["b"].to_numpy(float)
    comparison = compare_to_baseline(
        {"agree": (table["a"] == table["b"]).to_numpy(float), "rose": rose},
        lambda c: float(np.mean(c["agree"])), lambda c: float(max(np.mean(c["rose"]), 1.0 - np.mean(c["rose"]))),
        higher_is_better=True, groups=table["patient"].tolist(), n_bootstrap=n_bootstrap, seed=seed)
    return {"always_increases": float(rose.mean()), "never_increases": float(1.0 - rose.mean()),
            "against_best_constant": comparison.to_dict()}


def describe_against_constant(baselines: dict, profile: str = "the profile") -> str:
    """One line of :func:`against_constant_profiles`' result, for the command line and reports."""
    if not baselines:
        return "no transition"
    versus = baselines["against_best_constant"]
    difference = versus["difference"]
    interval = (f" [{difference['low']:+.3f}, {difference['high']:+.3f}] (95 % CI over {versus['bootstrap']})"
                if np.isfinite([difference["low"], difference["high"]]).all() else f" ({versus['bootstrap']})")
    return (f"always increases {baselines['always_increases']:.3f}, never increases {baselines['never_increases']:.3f}; "
            f"{profile} - the better constant {difference['value']:+.3f}{interval}: {versus['verdict']}")


def read_table(path: str) -> pd.DataFrame:
    """Read a CSV as strings (empty cells as NaN), with a clear error when it cannot be read."""
    try:
        return pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except FileNotFoundError:
        raise MonitoringInputError(f"file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MonitoringInputError(f"cannot read {path} as CSV: {error}") from None
