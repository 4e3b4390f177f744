"""The results table: ``results.csv`` / ``results.json``, written by ``pneumonitor analyze`` and the Deploy app, read
by ``monitor``, ``evaluate``, the duality study and the scripts. This module is the one place its columns are named.

``results.csv`` has exactly :data:`RESULT_COLUMNS` in this order, one row per input; an empty cell is "not
applicable" (a skipped input has no numbers, an image without DICOM header no identity). Text cells a spreadsheet
would run as a formula get a leading ``'`` (OWASP CSV injection). ``results.json`` is ``{"settings": {...},
"results": [rows]}`` with the raw values, ``null`` for NaN, :data:`JSON_ONLY_KEYS` and the extra keys a writer
declares (the Deploy app's ``seg``/``sr``/``sc`` paths); any other key is an error, so a misspelt column cannot
vanish.

:func:`read_results` accepts every ``results.csv`` written since the first release: the columns added later
(:data:`ADDED_COLUMNS`) may be absent and read as empty; a missing core column or a column this module does not
know is an error that names it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumonitor.publishing import write_csv, write_json

__all__ = [
    "Column",
    "SCHEMA",
    "RESULT_COLUMNS",
    "IDENTITY_COLUMNS",
    "FINDING_COLUMNS",
    "FILE_COLUMNS",
    "NUMERIC_COLUMNS",
    "UNCERTAINTY_COLUMNS",
    "QC_COLUMNS",
    "ADDED_COLUMNS",
    "JSON_ONLY_KEYS",
    "ResultsError",
    "Results",
    "empty_row",
    "write_results",
    "read_results",
    "read_settings",
    "schema_markdown",
]


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` is ``text``, ``float``, ``int`` or ``path`` (relative to the results folder)."""

    name: str
    kind: str
    group: str
    unit: str
    description: str


_C = Column
#: every column, in the order of ``results.csv``; ``group``: input, finding, file, identity, qc, uncertainty
SCHEMA: tuple[Column, ...] = (
    _C("image", "text", "input", "", "absolute path of the input file"),
    _C("status", "text", "input", "", "`ok`, or `skipped` (Deploy also `failed`)"),
    _C("reason", "text", "input", "", "why the input was skipped or failed"),
    _C("pneumonia_probability", "float", "finding", "0-1", "DLNet's pneumonia probability"),
    _C("positive", "int", "finding", "0/1", "probability >= the classification threshold"),
    _C("ratio_total", "float", "finding", "%", "Pneumonia Ratio of both lungs"),
    _C("ratio_right", "float", "finding", "%", "Pneumonia Ratio of the patient's right lung"),
    _C("ratio_left", "float", "finding", "%", "Pneumonia Ratio of the patient's left lung"),
    _C("score_right", "int", "finding", "0-4", "severity score of the right lung"),
    _C("score_left", "int", "finding", "0-4", "severity score of the left lung"),
    _C("score_total", "int", "finding", "0-8", "right + left score"),
    _C("lung_mask", "path", "file", "", "`masks/*_lungs.png`"),
    _C("pneumonia_mask", "path", "file", "", "`masks/*_pneumonia.png`"),
    _C("overlay", "path", "file", "", "`overlays/*_overlay.png`"),
    _C("heatmap", "path", "file", "", "`masks/*_heatmap.png`"),
    _C("patient_id", "text", "identity", "", "DICOM PatientID"),
    _C("study_instance_uid", "text", "identity", "", "DICOM StudyInstanceUID"),
    _C("series_instance_uid", "text", "identity", "", "DICOM SeriesInstanceUID"),
    _C("sop_instance_uid", "text", "identity", "", "DICOM SOPInstanceUID"),
    _C("study_date", "text", "identity", "YYYYMMDD", "DICOM StudyDate"),
    _C("acquisition_datetime", "text", "identity", "DICOM DT", "DICOM AcquisitionDateTime (else date + time)"),
    _C("view_position", "text", "identity", "", "DICOM ViewPosition"),
    _C("rows", "int", "input", "px", "image height"),
    _C("columns", "int", "input", "px", "image width"),
    _C("qc", "text", "qc", "", "the image QC gate's finding (`pass`; empty without the gate)"),
    _C("warnings", "text", "qc", "", "the reader's warnings, `; `-separated"),
    _C("ood", "text", "qc", "", "out-of-distribution flags, `; `-separated"),
    _C("pneumonia_probability_sd", "float", "uncertainty", "0-1", "SD of the probability over the passes"),
    _C("pneumonia_probability_low", "float", "uncertainty", "0-1", "p - z SD, clipped"),
    _C("pneumonia_probability_high", "float", "uncertainty", "0-1", "p + z SD, clipped"),
    _C("uncertain", "int", "uncertainty", "0/1", "the probability interval contains the operating point"),
    _C("ratio_total_sd", "float", "uncertainty", "pp", "SD of `ratio_total` over the passes"),
    _C("ratio_right_sd", "float", "uncertainty", "pp", "SD of `ratio_right`"),
    _C("ratio_left_sd", "float", "uncertainty", "pp", "SD of `ratio_left`"),
    _C("score_total_low", "int", "uncertainty", "0-8", "lowest total score of the passes and of the ratios +- z SD"),
    _C("score_total_high", "int", "uncertainty", "0-8", "highest total score"),
)
del _C

RESULT_COLUMNS: list[str] = [c.name for c in SCHEMA]
_BY_NAME = {c.name: c for c in SCHEMA}


def _group(name: str) -> tuple[str, ...]:
    return tuple(c.name for c in SCHEMA if c.group == name)


IDENTITY_COLUMNS = _group("identity")
FINDING_COLUMNS = _group("finding")
FILE_COLUMNS = _group("file")
QC_COLUMNS = _group("qc")
UNCERTAINTY_COLUMNS = _group("uncertainty")
NUMERIC_COLUMNS = tuple(c.name for c in SCHEMA if c.kind in ("float", "int"))
#: columns added after the first release (issue 18): an older results.csv lacks them
ADDED_COLUMNS = QC_COLUMNS + UNCERTAINTY_COLUMNS
#: keys of results.json rows that are not CSV columns: ``interval_z``, the z of the uncertainty intervals
#: (``p +- z SD``; the Deploy app's SR states its intervals with it)
JSON_ONLY_KEYS = ("interval_z",)


class ResultsError(ValueError):
    """A file that is not a readable results table; the message says which file and what is wrong."""


def empty_row() -> dict[str, Any]:
    """A row with every column empty (``""``)."""
    return dict.fromkeys(RESULT_COLUMNS, "")


def _csv_cell(value: Any) -> Any:
    """Empty for None/NaN; a text cell a spreadsheet would run as a formula (``=HYPERLINK(...)`` in a PatientID) gets a
    leading apostrophe; numbers and other text unchanged."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_results(rows: list[dict[str, Any]], out_dir: str | os.PathLike, settings: dict[str, Any],
                  json_only: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write ``OUT/results.csv`` (the schema's columns) and ``OUT/results.json`` (the rows as given, NaN as null, and
    ``settings``), each atomically. Returns their paths.

    Raises:
        ResultsError: a row has a key that is neither a column nor one of ``json_only`` (the writer's own extras,
            e.g. the Deploy app's object paths): a misspelt column would otherwise vanish from the CSV.
    """
    known = set(RESULT_COLUMNS) | set(JSON_ONLY_KEYS) | set(json_only)
    for row in rows:
        unknown = sorted(set(row) - known)
        if unknown:
            raise ResultsError(f"result row of {row.get('image')!r} has keys that are not results columns "
                               f"(pneumonitor/results.py): {', '.join(unknown)}")
    out_dir = Path(out_dir)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    write_csv(csv_path, ({k: _csv_cell(v) for k, v in row.items()} for row in rows), RESULT_COLUMNS,
              extrasaction="ignore")
    write_json(json_path, {"settings": settings, "results": rows})
    return csv_path, json_path


def _typed(column: Column, text: str) -> Any:
    if column.kind in ("text", "path"):
        return text
    if text == "":
        return None
    number = float(text)
    return int(number) if column.kind == "int" and number.is_integer() else number


@dataclass
class Results:
    """One ``results.csv`` read back.

    Attributes:
        path: the CSV file.
        rows: one dict per row with every column of :data:`RESULT_COLUMNS`: text and path cells as ``str`` (``""``
            when empty), numbers as ``int``/``float`` (``None`` when empty).
        settings: ``settings`` of the ``results.json`` beside it (``{}`` when absent or unreadable).
    """

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """The results folder (paths in file columns are relative to it)."""
        return self.path.parent

    def file(self, row: dict[str, Any], column: str) -> Path | None:
        """Absolute path of a file column of ``row``; ``None`` when empty."""
        value = row.get(column)
        if not value:
            return None
        return self.folder / value

    def frame(self):
        """The rows as a ``pandas.DataFrame``: numbers as float (NaN when empty), text as str."""
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=RESULT_COLUMNS)
        for name in NUMERIC_COLUMNS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        return frame


def read_results(path: str | os.PathLike) -> Results:
    """Read a ``results.csv`` (given as the file or its folder) and the settings of the ``results.json`` beside it.

    Raises:
        ResultsError: no such file, not a CSV, a core column missing, a column the schema does not know, a number
            that is not one.
    """
    import csv

    path = Path(path)
    csv_path = path / "results.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise ResultsError(f"results file not found: no results.csv at {path}; run `pneumonitor analyze ... --out DIR` "
                           "first")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a copy saved by a spreadsheet
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ResultsError(f"cannot read {csv_path} as CSV: {error}") from None
    missing = [name for name in RESULT_COLUMNS if name not in header and name not in ADDED_COLUMNS]
    if missing:
        raise ResultsError(f"{csv_path} is not a results.csv of 'pneumonitor analyze': missing column(s) "
                           f"{', '.join(missing)}")
    unknown = [name for name in header if name not in _BY_NAME]
    if unknown:
        raise ResultsError(f"{csv_path} has column(s) that are not in pneumonitor's results schema "
                           f"(pneumonitor/results.py): {', '.join(map(repr, unknown))}")
    rows = []
    for line, record in enumerate(records, start=2):
        row = {}
        for column in SCHEMA:
            text = (record.get(column.name) or "").strip() if column.kind != "text" else record.get(column.name) or ""
            try:
                row[column.name] = _typed(column, text)
            except ValueError:
                raise ResultsError(f"{csv_path} line {line}: {column.name} {text!r} is not a number") from None
        rows.append(row)
    return Results(path=csv_path, rows=rows, settings=read_settings(csv_path.parent))


def read_settings(folder: str | os.PathLike) -> dict[str, Any]:
    """``settings`` of ``folder/results.json`` (models, thresholds); ``{}`` when absent or unreadable."""
    try:
        settings = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return settings if isinstance(settings, dict) else {}


def schema_markdown() -> str:
    """The schema as a Markdown table (docs/analyze.md holds it; a test keeps the two equal)."""
    lines = ["| column | type | unit | group | meaning |", "|---|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.kind} | {c.unit} | {c.group} | {c.description} |" for c in SCHEMA]
    return "\n".join(lines) + "\n"
