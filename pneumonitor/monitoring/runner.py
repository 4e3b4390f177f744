"""Run patient monitoring end to end: ``results.csv`` (+ metadata) -> timelines, plots, change labels, HTML report.

Output folder layout (written into a temporary folder next to ``out_dir`` and renamed into place only when complete)::

    index.html                      links every patient; pooled trend agreement when a reference is given
    timelines.csv                   all patients' timelines, with a patient_id column first
    trend_agreement.csv             per patient and reference column (only with reference columns)
    unassigned.csv                  studies that could not be assigned to a patient, with the reason
    monitor.json                    settings and summary numbers
    patients/<id>/timeline.csv      one patient's dated studies in time order
    patients/<id>/profile.png       ratio / score / probability over time
    patients/<id>/overlays.png      overlays in time order
    patients/<id>/report.html       the patient's page
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pneumonitor.monitoring.compare import against_constant_profiles, compare_profiles
from pneumonitor.monitoring.plots import plot_overlay_strip, plot_profile
from pneumonitor.monitoring.profiles import TIMELINE_COLUMNS, PatientProfile, build_profiles
from pneumonitor.monitoring.pages import PatientPage, write_index, write_patient_report
from pneumonitor.monitoring.studies import (
    MetadataColumns,
    MonitoringInputError,
    attach_patient_and_time,
    read_results,
    read_study_metadata,
)
from pneumonitor.monitoring.trend import ChangeRule, PooledTrendAgreement
from pneumonitor.publishing import atomic_folder, write_json


@dataclass
class MonitoringSummary:
    """What :func:`run_monitoring` wrote.

    Attributes:
        out_dir: the output folder.
        profiles: one profile per patient, sorted by patient id.
        unassigned: studies without a patient (columns ``image``, ``reason``).
        pooled: reference column -> trend agreement pooled over patients.
        against_constants: reference column -> the same against the constant profiles
            (:func:`~pneumonitor.monitoring.compare.against_constant_profiles`).
    """

    out_dir: Path
    profiles: list[PatientProfile]
    unassigned: pd.DataFrame
    pooled: dict[str, PooledTrendAgreement] = field(default_factory=dict)
    against_constants: dict[str, dict] = field(default_factory=dict)

    @property
    def n_dated_studies(self) -> int:
        return int(sum(len(p.timeline) for p in self.profiles))


def patient_folder_names(patient_ids: Sequence[str]) -> list[str]:
    """File-system-safe, unique folder names for patient ids (``patients/<name>``)."""
    names: list[str] = []
    used: set[str] = set()
    for patient_id in patient_ids:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", patient_id).strip("._") or "patient"
        name, suffix = base, 2
        while name.lower() in used:
            name, suffix = f"{base}-{suffix}", suffix + 1
        used.add(name.lower())
        names.append(f"patients/{name}")
    return names


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MonitoringInputError(f"--out {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise MonitoringInputError(f"--out {out_dir} is not empty; choose another folder or pass --overwrite")


def run_monitoring(
    results: Sequence[Path] | Path,
    out_dir: Path,
    metadata: Path | None = None,
    columns: MetadataColumns = MetadataColumns(),
    compare_column: str = "score_total",
    rule: ChangeRule | None = None,
    classification_threshold: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MonitoringSummary:
    """Turn ``analyze`` results (+ optional metadata) into per-patient timelines, plots, change labels and reports.

    Args:
        results: one or more ``results.csv`` files of ``pneumonitor analyze``.
        out_dir: output folder (created; must be empty unless ``overwrite``).
        metadata: optional CSV giving patient and time per image file (see :class:`MetadataColumns`).
        columns: metadata column names; ``columns.extra`` are reference scores compared by trend agreement.
        compare_column: timeline column compared with each reference column (default the total score).
        rule: change rule (default :class:`ChangeRule`).
        classification_threshold: threshold drawn on the plots; default from ``results.json``, else 0.62.
        overwrite: replace a non-empty ``out_dir``.
        progress: show a tqdm progress bar over patients.

    Raises:
        MonitoringInputError: unusable inputs or output folder; nothing is written then.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    rule = rule or ChangeRule()
    if compare_column not in TIMELINE_COLUMNS:
        raise MonitoringInputError(f"--compare-column must be a timeline column ({', '.join(TIMELINE_COLUMNS)})")
    table = read_results(list(results) if not isinstance(results, str | Path) else results)
    if table.rows.empty:
        raise MonitoringInputError("the results hold no study")
    study_metadata = read_study_metadata(metadata, columns) if metadata is not None else None
    reference_columns = tuple(columns.extra) if study_metadata is not None else ()
    threshold = table.classification_threshold if classification_threshold is None else classification_threshold
    studies = attach_patient_and_time(table.rows, study_metadata)
    profiles, unassigned = build_profiles(studies, rule, reference_columns, compare_column)

    with atomic_folder(out_dir) as built:
        pages = [
            PatientPage(p.patient_id, folder, p)
            for p, folder in zip(profiles, patient_folder_names([p.patient_id for p in profiles]), strict=True)
        ]
        for page in tqdm(pages, desc="patients", unit="patient", disable=not progress):
            folder = built / page.folder
            folder.mkdir(parents=True)
            page.profile.timeline.to_csv(folder / "timeline.csv", index=False)
            if not page.profile.timeline.empty:
                plot_profile(page.profile, folder / "profile.png", threshold, reference_columns)
                plot_overlay_strip(page.profile, folder / "overlays.png")
            write_patient_report(page, built, rule, reference_columns, compare_column)

        timelines = [p.timeline.assign(patient_id=p.patient_id) for p in profiles if not p.timeline.empty]
        empty = pd.DataFrame(columns=[*TIMELINE_COLUMNS, *reference_columns])
        combined = pd.concat(timelines, ignore_index=True) if timelines else empty
        combined = combined.reindex(columns=["patient_id", *[c for c in combined.columns if c != "patient_id"]])
        combined.to_csv(built / "timelines.csv", index=False)
        unassigned.to_csv(built / "unassigned.csv", index=False)

        pooled: dict[str, PooledTrendAgreement] = {}
        against_constants: dict[str, dict] = {}  # reference column -> against_constant_profiles
        if reference_columns:
            agreement_rows = []
            for column in reference_columns:
                joined = [pd.DataFrame(columns=["patient", "a", "b"])]  # both profiles, patient by patient
                for profile in profiles:
                    value, n_points = profile.agreement[column]
                    agreement_rows.append(
                        {"patient_id": profile.patient_id, "reference": column, "n_points": n_points,
                         "n_transitions": max(n_points - 1, 0), "agreement": value}
                    )
                    pair = profile.timeline[[compare_column, column]].apply(pd.to_numeric, errors="coerce").dropna()
                    joined.append(pd.DataFrame({"patient": profile.patient_id, "a": pair[compare_column].to_numpy(),
                                                "b": pair[column].to_numpy()}))
                joined_profiles = pd.concat(joined, ignore_index=True)
                _, pooled[column] = compare_profiles(joined_profiles)
                against_constants[column] = against_constant_profiles(joined_profiles)
            pd.DataFrame(agreement_rows).to_csv(built / "trend_agreement.csv", index=False)

        settings: dict[str, object] = {
            "results": [str(p) for p in table.sources],
            "metadata": str(metadata) if metadata is not None else None,
            "metadata_columns": {"image": columns.image, "patient": columns.patient, "time": columns.time,
                                 "time_kind": study_metadata.time_kind if study_metadata else None,
                                 "reference": list(reference_columns)},
            "compare_column": compare_column,
            "classification_threshold": threshold,
            "change_rule": {"ratio_margin_pp": rule.ratio_margin, "min_score_step": rule.min_score_step,
                            "uncertainty_z": rule.uncertainty_z},
        }
        write_index(pages, unassigned, built, rule, settings, pooled, compare_column, against_constants)
        summary_numbers = {
            "patients": len(profiles),
            "dated_studies": int(sum(len(p.timeline) for p in profiles)),
            "undated_studies": int(sum(len(p.undated) for p in profiles)),
            "skipped_studies": int(sum(len(p.skipped) for p in profiles)),
            "unassigned_studies": len(unassigned),
            "trend_agreement": {
                column: {"accuracy": s.accuracy, "n_agree": s.n_agree, "n_transitions": s.n_transitions,
                         "n_patients": s.n_patients, "mean_per_patient": s.mean_per_patient,
                         **against_constants.get(column, {})}
                for column, s in pooled.items()
            },
        }
        write_json(built / "monitor.json", {"settings": settings, "summary": summary_numbers})
    return MonitoringSummary(out_dir=out_dir, profiles=profiles, unassigned=unassigned, pooled=pooled,
                             against_constants=against_constants)
