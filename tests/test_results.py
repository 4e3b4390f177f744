"""The results schema (``pneumonitor.results``): round trip, clear errors, older files, and docs/analyze.md's table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from pneumonitor.results import (
    ADDED_COLUMNS,
    RESULT_COLUMNS,
    SCHEMA,
    ResultsError,
    empty_row,
    read_results,
    schema_markdown,
    write_results,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analyze.md"


def _ok_row(image: str) -> dict:
    row = empty_row()
    row.update(image=image, status="ok", pneumonia_probability=0.912345, positive=1, ratio_total=31.25,
               ratio_right=40.5, ratio_left=22.0, score_right=2, score_left=1, score_total=3,
               lung_mask="masks/a_lungs.png", pneumonia_mask="masks/a_pneumonia.png", overlay="overlays/a.png",
               heatmap="masks/a_heatmap.png", patient_id="=HYPERLINK(1)", rows=512, columns=480, qc="pass",
               pneumonia_probability_sd=float("nan"), uncertain=0, score_total_low=2, score_total_high=4)
    return row


def test_round_trip_types_and_settings(tmp_path):
    skipped = {**empty_row(), "image": "/x/b.dcm", "status": "skipped", "reason": "lateral view"}
    csv_path, json_path = write_results([_ok_row("/x/a.png"), skipped], tmp_path, {"classification_threshold": 0.47})
    with csv_path.open(newline="") as handle:
        assert next(csv.reader(handle)) == RESULT_COLUMNS
    document = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert document["results"][0]["pneumonia_probability_sd"] is None
    assert document["results"][0]["patient_id"] == "=HYPERLINK(1)"  # the JSON keeps the raw value

    results = read_results(tmp_path)
    assert results.settings == {"classification_threshold": 0.47}
    ok, skip = results.rows
    assert ok["score_total"] == 3 and isinstance(ok["score_total"], int)
    assert ok["pneumonia_probability"] == 0.912345 and ok["rows"] == 512
    assert ok["pneumonia_probability_sd"] is None and ok["patient_id"] == "'=HYPERLINK(1)"  # the CSV's escape
    assert results.file(ok, "overlay") == tmp_path / "overlays/a.png" and results.file(skip, "overlay") is None
    assert skip["reason"] == "lateral view" and skip["pneumonia_probability"] is None
    frame = results.frame()
    assert list(frame.columns) == RESULT_COLUMNS and frame["score_total"].dtype == float
    assert math.isnan(frame["score_total"][1])


def test_unknown_and_missing_columns_are_named(tmp_path):
    with pytest.raises(ResultsError, match="keys that are not results columns.*ratio_totl"):
        write_results([{**_ok_row("/x/a.png"), "ratio_totl": 3.0}], tmp_path, {})
    write_results([{**_ok_row("/x/a.png"), "seg": "1.2/01-seg.dcm"}], tmp_path, {}, json_only=("seg",))
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["seg"] == "1.2/01-seg.dcm"
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError, match="missing column.*image, status, reason"):
        read_results(tmp_path / "other.csv")
    (tmp_path / "extra.csv").write_text(",".join(RESULT_COLUMNS + ["notes"]) + "\n")
    with pytest.raises(ResultsError, match="not in pneumonitor's results schema.*'notes'"):
        read_results(tmp_path / "extra.csv")
    (tmp_path / "text.csv").write_text(",".join(RESULT_COLUMNS) + "\n/a.png,ok,,high" + "," * 32 + "\n")
    with pytest.raises(ResultsError, match="line 2: pneumonia_probability 'high' is not a number"):
        read_results(tmp_path / "text.csv")
    with pytest.raises(ResultsError, match="not found"):
        read_results(tmp_path / "absent")


def test_reads_a_file_written_before_the_qc_and_uncertainty_columns(tmp_path):
    """results.csv of the first release: 24 columns, no qc/warnings/ood/uncertainty; they read as empty."""
    old = [c for c in RESULT_COLUMNS if c not in ADDED_COLUMNS]
    assert len(old) == 24
    with (tmp_path / "results.csv").open("w", newline="", encoding="utf-8-sig") as handle:  # as a spreadsheet saves
        writer = csv.DictWriter(handle, fieldnames=old, extrasaction="ignore")
        writer.writeheader()
        writer.writerow({**_ok_row("/x/a.png"), "patient_id": "P1"})
    (row,) = read_results(tmp_path / "results.csv").rows
    assert row["ratio_total"] == 31.25 and row["qc"] == "" and row["ratio_total_sd"] is None
    assert read_results(tmp_path).settings == {}  # no results.json beside it


def test_reads_a_results_csv_written_by_the_code_before_this_module():
    """A results.csv that `pneumonitor analyze` wrote before pneumonitor.results existed (tests/fixtures)."""
    fixture = Path(__file__).parent / "fixtures" / "results_v1" / "results.csv"
    results = read_results(fixture)
    assert [r["status"] for r in results.rows] == ["ok", "skipped"]
    assert results.rows[0]["score_total"] == 0 and results.rows[1]["reason"]


def test_docs_analyze_holds_the_schema_table():
    """docs/analyze.md's results table is ``schema_markdown()``: the doc cannot drift from the code."""
    assert schema_markdown() in DOCS.read_text(), "regenerate: python -c 'from pneumonitor.results import " \
        "schema_markdown; print(schema_markdown())' and paste it into docs/analyze.md"
    assert len({c.name for c in SCHEMA}) == len(SCHEMA)
