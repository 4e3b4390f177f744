"""Per-patient disease profiles: studies grouped by patient, ordered in time, with the change between studies.

A profile (docs/monitoring.md, Amer et al. 2020 Fig. 11) is the Pneumonia Ratio (total, right, left) and the 0-8 score at
each time point of one patient. Ordering rules, so that the same input always gives the same profile:

* studies are sorted by time; ties (same day offset or same date-time, e.g. a PA and an AP film of one day) are
  ordered by image path and flagged in the ``tie`` column;
* a patient's profile uses one kind of time (day offsets or date-times, whichever most of its studies have); studies
  with no time, or with the other kind, go to ``undated`` with the reason, and are left out of the plot and the changes;
* day-offset times are used as they are (days since the collection's reference, e.g. symptom onset); date-times are
  turned into days since the patient's first dated study;
* ``analyze`` rows with ``status == skipped`` go to ``skipped`` with their reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pneumonitor.monitoring.studies import RATIO_SD_COLUMN, TIME_DATETIME, TIME_OFFSET
from pneumonitor.monitoring.trend import ChangeRule, trend_agreement

#: Columns of ``timeline.csv``, in order; reference columns (e.g. an expert score) are appended after them.
TIMELINE_COLUMNS: tuple[str, ...] = (
    "order",
    "time",
    "day",
    "tie",
    "ratio_total",
    "ratio_right",
    "ratio_left",
    "score_right",
    "score_left",
    "score_total",
    "probability",
    "positive",
    "change",
    "delta_score",
    "delta_ratio",
    "change_margin",
    "image",
    "overlay",
)
CHANGE_BASELINE = "baseline"


@dataclass
class PatientProfile:
    """Disease profile of one patient.

    Attributes:
        patient_id: identifier as given by DICOM PatientID or the metadata.
        time_kind: ``offset`` (day offsets) or ``datetime``; "" when the patient has no dated study.
        timeline: dated studies in time order, columns :data:`TIMELINE_COLUMNS` + reference columns. ``day`` is
            float days; ratios are percent in [0, 100]; scores are integers 0-4 per lung and 0-8 in total;
            ``change`` is ``baseline`` for the first study, then ``improved`` / ``stable`` / ``worse``.
        undated: studies that could not be placed in time (columns ``image``, ``reason``).
        skipped: studies ``analyze`` skipped (columns ``image``, ``reason``).
        agreement: reference column -> (trend agreement in [0, 1] or NaN, number of time points used).
    """

    patient_id: str
    time_kind: str
    timeline: pd.DataFrame
    undated: pd.DataFrame
    skipped: pd.DataFrame
    agreement: dict[str, tuple[float, int]] = field(default_factory=dict)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``p2`` before ``p10`` and numbers before text."""
    parts = [part for part in re.split(r"(\d+)", str(text)) if part]
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts)


def _reason_frame(rows: pd.DataFrame, reasons: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"image": list(rows["image"]), "reason": list(reasons)}, columns=["image", "reason"])


def _order_and_label(dated: pd.DataFrame, rule: ChangeRule, reference_columns: Sequence[str]) -> pd.DataFrame:
    dated = dated.sort_values(["_day", "image"], kind="stable").reset_index(drop=True)
    day = dated["_day"].to_numpy(dtype=float)
    equal_to_next = day[1:] == day[:-1]
    same_as_previous = np.r_[False, equal_to_next][: len(day)]
    same_as_next = np.r_[equal_to_next, False][: len(day)]
    has_sd = RATIO_SD_COLUMN in dated.columns
    changes: list[str] = [CHANGE_BASELINE][: len(dated)]
    delta_scores, delta_ratios, margins = [[np.nan][: len(dated)] for _ in range(3)]
    for i in range(1, len(dated)):
        previous, current = dated.iloc[i - 1], dated.iloc[i]
        sd_previous = float(previous[RATIO_SD_COLUMN]) if has_sd else None
        sd_current = float(current[RATIO_SD_COLUMN]) if has_sd else None
        changes.append(
            rule.label(
                previous["score_total"],
                current["score_total"],
                previous["ratio_total"],
                current["ratio_total"],
                sd_previous,
                sd_current,
            )
        )
        delta_scores.append(current["score_total"] - previous["score_total"])
        delta_ratios.append(current["ratio_total"] - previous["ratio_total"])
        margins.append(rule.margin(sd_previous, sd_current))
    timeline = pd.DataFrame(
        {
            "order": np.arange(1, len(dated) + 1),
            "time": dated["_time_display"],
            "day": day,
            "tie": same_as_previous | same_as_next,
            "ratio_total": dated["ratio_total"],
            "ratio_right": dated["ratio_right"],
            "ratio_left": dated["ratio_left"],
            "score_right": dated["score_right"].round().astype("Int64"),
            "score_left": dated["score_left"].round().astype("Int64"),
            "score_total": dated["score_total"].round().astype("Int64"),
            "probability": dated["pneumonia_probability"],
            "positive": dated["positive"].round().astype("Int64"),
            "change": changes,
            "delta_score": delta_scores,
            "delta_ratio": delta_ratios,
            "change_margin": margins,
            "image": dated["image"],
            "overlay": dated["overlay"] if "overlay" in dated.columns else "",
        }
    )
    if has_sd:
        timeline[RATIO_SD_COLUMN] = dated[RATIO_SD_COLUMN]
    for column in reference_columns:
        timeline[column] = dated[column].to_numpy() if column in dated.columns else np.nan
    return timeline


def build_profiles(
    studies: pd.DataFrame,
    rule: ChangeRule | None = None,
    reference_columns: Sequence[str] = (),
    compare_column: str = "score_total",
) -> tuple[list[PatientProfile], pd.DataFrame]:
    """Group studies by patient, order them in time and label the changes.

    Args:
        studies: output of :func:`pneumonitor.monitoring.studies.attach_patient_and_time`.
        rule: change rule (default :class:`ChangeRule` with its defaults).
        reference_columns: columns to carry into the timelines and to compare with ``compare_column`` by trend
            agreement (e.g. an expert score from the metadata).
        compare_column: timeline column compared with each reference column (default the predicted total score).

    Returns:
        (profiles sorted by patient id, unassigned studies with columns ``image``, ``reason``).
    """
    rule = rule or ChangeRule()
    unassigned_rows = studies[studies["patient"] == ""]
    unassigned = _reason_frame(unassigned_rows, list(unassigned_rows["unassigned_reason"]))
    profiles: list[PatientProfile] = []
    assigned = studies[studies["patient"] != ""]
    for patient_id in sorted(assigned["patient"].unique(), key=natural_key):
        rows = assigned[assigned["patient"] == patient_id]
        ok = rows[rows["status"] == "ok"]
        not_ok = rows[rows["status"] != "ok"]
        skipped_reasons = [
            f"analyze: {r}" if r else f"analyze status {s!r}"
            for r, s in zip(not_ok.get("reason", pd.Series([""] * len(not_ok))), not_ok["status"], strict=True)
        ]
        # A row marked ok but lacking a number cannot be plotted: treat it as skipped rather than guess.
        numbers = ["ratio_total", "ratio_right", "ratio_left", "score_total", "score_right", "score_left"]
        incomplete = ok[ok[numbers].isna().any(axis=1)]
        ok = ok.drop(incomplete.index)
        skipped = pd.concat(
            [
                _reason_frame(not_ok, skipped_reasons),
                _reason_frame(incomplete, ["status ok but ratio or score missing"] * len(incomplete)),
            ],
            ignore_index=True,
        )
        kinds = ok["time_kind"][ok["time_kind"] != ""]
        # Most studies decide the kind of time; offsets win a tie because they need no calendar.
        time_kind = ""
        if len(kinds):
            counts = kinds.value_counts()
            time_kind = TIME_OFFSET if counts.get(TIME_OFFSET, 0) >= counts.get(TIME_DATETIME, 0) else TIME_DATETIME
        dated = ok[ok["time_kind"] == time_kind] if time_kind else ok.iloc[0:0]
        not_dated = ok.drop(dated.index)
        undated = _reason_frame(
            not_dated,
            [
                f"no usable acquisition time ({src}: {txt!r})"
                if not kind
                else f"time is a {kind} while this patient's profile uses {time_kind}s"
                for kind, src, txt in zip(
                    not_dated["time_kind"], not_dated["identity_source"], not_dated["time_text"], strict=True
                )
            ],
        )
        dated = dated.copy()
        if time_kind == TIME_OFFSET:
            dated["_day"] = dated["time_value"].astype(float)
            dated["_time_display"] = [f"day {v:g}" for v in dated["_day"]]
        elif time_kind == TIME_DATETIME:
            stamps = pd.to_datetime(pd.Series(list(dated["time_value"]), index=dated.index))
            dated["_day"] = (stamps - stamps.min()).dt.total_seconds() / 86400.0
            dated["_time_display"] = [s.isoformat(sep=" ") for s in stamps]
        else:
            dated["_day"] = pd.Series(dtype=float)
            dated["_time_display"] = pd.Series(dtype=str)
        timeline = _order_and_label(dated, rule, reference_columns)
        agreement: dict[str, tuple[float, int]] = {}
        for column in reference_columns:
            pair = timeline[[compare_column, column]].apply(pd.to_numeric, errors="coerce").dropna()
            value = trend_agreement(pair[compare_column], pair[column]) if len(pair) >= 2 else float("nan")
            agreement[column] = (value, len(pair))
        profiles.append(PatientProfile(patient_id, time_kind, timeline, undated, skipped, agreement))
    return profiles, unassigned
