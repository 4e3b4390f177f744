"""Read ``analyze`` results and study metadata, and attach a patient and an acquisition time to every study.

Where patient and time come from, per study (first that applies):

1. a metadata CSV row whose image column names the same file (matched by file name without extension, case-insensitive,
   spaces read as ``_``, so ``foo bar.jpeg`` in the metadata matches the converted ``foo_bar.png`` that was analysed);
   the COVID-19 Image Data Collection's ``metadata.csv`` works as-is (``patientid``, ``offset`` in days, ``filename``);
2. the DICOM identity columns of ``results.csv``: ``patient_id`` and ``acquisition_datetime``, else ``study_date``.

Times are either day offsets (numbers, e.g. days since admission) or calendar date-times; a patient's profile uses one
kind. Studies without a usable patient or time are kept aside with the reason, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pneumonitor.results import FILE_COLUMNS, RESULT_COLUMNS, ResultsError
from pneumonitor.results import read_results as load_results_file

#: Optional per-study standard deviation of ``ratio_total`` (percentage points), used by the change rule.
RATIO_SD_COLUMN = "ratio_total_sd"  # written by pneumonitor analyze (uncertainty passes)

TIME_OFFSET = "offset"
TIME_DATETIME = "datetime"
DEFAULT_CLASSIFICATION_THRESHOLD = 0.62

_DICOM_DT = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


class MonitoringInputError(ValueError):
    """Raised for inputs that monitoring cannot use; the message says what is wrong and how to fix it."""


def image_key(name: str) -> str:
    """Matching key of an image reference: file name without extension, lower case, spaces as ``_``.

    ``/data/images/Foo Bar.png``, ``images/foo_bar.jpeg`` and ``foo bar.dcm`` all give ``foo_bar``.
    """
    stem = Path(str(name).strip().replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return stem.replace(" ", "_").lower()


def parse_datetime(text: object) -> pd.Timestamp | None:
    """Parse a DICOM DA/DT value (``YYYYMMDD[HHMMSS[.ffffff]]``) or an ISO-like date-time; None when unparseable."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    value = str(text).strip()
    if not value:
        return None
    match = _DICOM_DT.match(value)
    if match:
        year, month, day, hour, minute, second, fraction, _ = match.groups()
        try:
            return pd.Timestamp(
                year=int(year),
                month=int(month),
                day=int(day),
                hour=int(hour or 0),
                minute=int(minute or 0),
                second=int(second or 0),
                microsecond=int(round(float(fraction) * 1e6)) if fraction else 0,
            )
        except ValueError:
            return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if pd.isna(stamp):
        return None
    # Time-zone-aware stamps are compared in UTC and stored naive so that a patient's studies stay comparable.
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def parse_offset(text: object) -> float | None:
    """Parse a day offset (a finite number, e.g. ``"14"`` or ``"3.5"``); None for empty, ``?`` or non-numbers."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


@dataclass
class ResultsTable:
    """Rows of one or more ``results.csv`` files.

    Attributes:
        rows: one row per input image; numeric columns as float (NaN when empty), output image columns as absolute
            paths (empty string when absent), all other columns as strings.
        classification_threshold: DLNet threshold used by ``analyze`` (from ``results.json`` settings when found).
        sources: the CSV files read.
    """

    rows: pd.DataFrame
    classification_threshold: float
    sources: list[Path] = field(default_factory=list)


def _threshold(settings: dict) -> float | None:
    for key in ("classification_threshold", "threshold"):
        if isinstance(settings.get(key), int | float):
            return float(settings[key])
    return None


def read_results(paths: list[Path] | Path) -> ResultsTable:
    """Read ``results.csv`` files written by ``pneumonitor analyze`` (:func:`pneumonitor.results.read_results`) and
    concatenate them; output file columns become absolute paths.

    Raises:
        MonitoringInputError: a file is missing, unreadable, or not a results table (the reason names the column).
    """
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    frames: list[pd.DataFrame] = []
    thresholds: set[float] = set()
    for path in paths:
        try:
            results = load_results_file(path)
        except ResultsError as error:
            raise MonitoringInputError(str(error)) from None
        frame = results.frame()
        if frame[RATIO_SD_COLUMN].isna().all():
            frame = frame.drop(columns=RATIO_SD_COLUMN)  # analyze --uncertainty off writes the column empty
        base = results.folder.resolve()
        for column in FILE_COLUMNS:
            frame[column] = [str((base / v).resolve()) if v else "" for v in frame[column]]
        frame["status"] = frame["status"].str.strip().str.lower()
        frame["results_file"] = str(path)
        frames.append(frame)
        threshold = _threshold(results.settings)
        if threshold is not None:
            thresholds.add(threshold)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    threshold = thresholds.pop() if len(thresholds) == 1 else DEFAULT_CLASSIFICATION_THRESHOLD
    return ResultsTable(rows=rows, classification_threshold=threshold, sources=paths)


@dataclass(frozen=True)
class MetadataColumns:
    """Names of the metadata CSV columns; the defaults read the COVID-19 Image Data Collection's ``metadata.csv``.

    Attributes:
        image: column naming the image file (path or file name; matched by :func:`image_key`).
        patient: patient identifier column.
        time: acquisition time column: day offsets (numbers) or dates/date-times.
        time_kind: ``auto`` (day offsets if at least half of the non-empty values are numbers, else dates),
            ``offset`` or ``datetime``.
        extra: further columns to carry into the timelines (e.g. an expert score to compare with).
    """

    image: str = "filename"
    patient: str = "patientid"
    time: str = "offset"
    time_kind: str = "auto"
    extra: tuple[str, ...] = ()


@dataclass
class StudyMetadata:
    """Metadata indexed by :func:`image_key`.

    Attributes:
        by_key: one row per key with columns ``patient``, ``time_kind``, ``time_value`` (float days or Timestamp or
            None), ``time_text`` and the extra columns.
        ambiguous: key -> reason, for images whose metadata rows disagree on patient or time.
        time_kind: the kind of the time column, ``offset`` or ``datetime``.
        source: the CSV file.
        extra: names of the extra columns carried into the timelines.
    """

    by_key: dict[str, dict[str, object]]
    ambiguous: dict[str, str]
    time_kind: str
    source: Path
    extra: tuple[str, ...] = ()


def read_study_metadata(path: Path, columns: MetadataColumns = MetadataColumns()) -> StudyMetadata:
    """Read a metadata CSV that gives, per image file, the patient and the acquisition time.

    Rows that name the same image and agree on patient and time are merged (the COVID collection lists a few images
    twice); rows that disagree make that image ambiguous, and it is reported instead of guessed.

    Raises:
        MonitoringInputError: missing file or column, or an unknown ``time_kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise MonitoringInputError(f"metadata file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MonitoringInputError(f"cannot read {path} as CSV: {error}") from None
    wanted = {"image": columns.image, "patient": columns.patient, "time": columns.time}
    missing = [f"{name} column '{col}'" for name, col in wanted.items() if col not in frame.columns]
    missing += [f"extra column '{col}'" for col in columns.extra if col not in frame.columns]
    if missing:
        raise MonitoringInputError(
            f"{path} lacks the {', '.join(missing)}; available columns: {', '.join(frame.columns)}. "
            "Name them with --image-column / --patient-column / --time-column."
        )
    if columns.time_kind not in ("auto", TIME_OFFSET, TIME_DATETIME):
        raise MonitoringInputError(f"time kind must be auto, offset or datetime, got {columns.time_kind!r}")

    raw_times = frame[columns.time].str.strip()
    time_kind = columns.time_kind
    if time_kind == "auto":
        non_empty = raw_times[raw_times != ""]
        numeric = non_empty.map(lambda v: parse_offset(v) is not None)
        time_kind = TIME_OFFSET if len(non_empty) == 0 or numeric.mean() >= 0.5 else TIME_DATETIME
    parse = parse_offset if time_kind == TIME_OFFSET else parse_datetime

    by_key: dict[str, dict[str, object]] = {}
    ambiguous: dict[str, str] = {}
    for record in frame.to_dict("records"):
        image = str(record[columns.image]).strip()
        if not image:
            continue
        key = image_key(image)
        entry = {
            "patient": str(record[columns.patient]).strip(),
            "time_kind": time_kind,
            "time_value": parse(record[columns.time]),
            "time_text": str(record[columns.time]).strip(),
            **{col: record[col] for col in columns.extra},
        }
        previous = by_key.get(key)
        if previous is None:
            by_key[key] = entry
        elif (previous["patient"], previous["time_text"]) != (entry["patient"], entry["time_text"]):
            ambiguous[key] = (
                f"metadata rows for {image} disagree: patient {previous['patient']!r} at {previous['time_text']!r} "
                f"vs patient {entry['patient']!r} at {entry['time_text']!r}"
            )
    for key in ambiguous:
        by_key.pop(key, None)
    return StudyMetadata(by_key=by_key, ambiguous=ambiguous, time_kind=time_kind, source=path, extra=columns.extra)


def attach_patient_and_time(results: pd.DataFrame, metadata: StudyMetadata | None = None) -> pd.DataFrame:
    """Add ``patient``, ``time_kind``, ``time_value``, ``time_text``, ``identity_source`` and ``unassigned_reason``.

    Args:
        results: rows of :class:`ResultsTable`.
        metadata: optional metadata; it takes precedence over the DICOM columns for the images it names.

    Returns:
        a copy of ``results`` with the added columns; ``patient`` is "" and ``unassigned_reason`` says why when the
        study cannot be placed in a patient profile. ``time_value`` is a float (day offset), a Timestamp, or None.
    """
    table = results.copy()
    patients, kinds, values, texts, sources, reasons = [], [], [], [], [], []
    extra_columns: dict[str, list[object]] = {}
    if metadata is not None:
        extra_columns = {column: [] for column in metadata.extra}
    for record in table.to_dict("records"):
        key = image_key(record["image"])
        entry = metadata.by_key.get(key) if metadata is not None else None
        reason = ""
        if metadata is not None and key in metadata.ambiguous:
            patient, kind, value, text, source = "", "", None, "", "metadata"
            reason = metadata.ambiguous[key]
        elif entry is not None:
            patient, kind, value, text, source = (
                str(entry["patient"]),
                str(entry["time_kind"]),
                entry["time_value"],
                str(entry["time_text"]),
                "metadata",
            )
            if value is None:
                kind = ""
        else:
            patient, source = str(record.get("patient_id", "") or "").strip(), "dicom"
            text = str(record.get("acquisition_datetime", "") or "").strip()
            value = parse_datetime(text)
            if value is None:
                text = str(record.get("study_date", "") or "").strip()
                value = parse_datetime(text)
            kind = TIME_DATETIME if value is not None else ""
            if not patient:
                reason = (
                    "no patient id: the image has no metadata row"
                    + (" (matched by file name without extension)" if metadata is not None else " (give --metadata)")
                    + " and no DICOM PatientID"
                )
        patients.append(patient)
        kinds.append(kind)
        values.append(value)
        texts.append(text)
        sources.append(source)
        reasons.append(reason)
        for column, column_values in extra_columns.items():
            column_values.append(entry.get(column, "") if entry is not None else "")
    table["patient"] = patients
    table["time_kind"] = kinds
    table["time_value"] = pd.Series(values, index=table.index, dtype=object)
    table["time_text"] = texts
    table["identity_source"] = sources
    table["unassigned_reason"] = reasons
    for column, column_values in extra_columns.items():
        # Extra metadata columns are usually scores: numeric where they parse, NaN where empty.
        as_numbers = pd.to_numeric(pd.Series(column_values, index=table.index).replace("", np.nan), errors="coerce")
        table[column] = as_numbers if as_numbers.notna().any() else column_values
    return table
