"""The Deploy app end to end (``python apps/deploy -i IN -o OUT -m MODELS``) on the real CR/DX samples plus bad
inputs, against ``pneumonitor analyze`` on the same images with the same weights (bundles for the CLI, their TorchScript
for the app). The DLNet heatmap varies over the image so that ratios and scores are not trivially 0 or 100 %.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pneumonitor.severity import LEFT_LUNG_VALUE, RIGHT_LUNG_VALUE

from test_reading import gradient, make_dicom
from test_operators import write_models

REPO_ROOT = Path(__file__).resolve().parents[2]
DCIODVFY = shutil.which("dciodvfy")
HEATMAP_BIAS, HEATMAP_SCALE = 0.55, 0.3  # ratios 26-75 % on the samples


def run_app(input_folder: Path, output_folder: Path, models: Path, qc: str = "on") -> subprocess.CompletedProcess:
    env = {**os.environ, "PNEUMONITOR_DEVICE": "cpu", "PNEUMONITOR_QC": qc}
    command = [sys.executable, str(REPO_ROOT / "apps" / "deploy"), "-i", str(input_folder), "-o", str(output_folder),
               "-m", str(models)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=output_folder.parent)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("app-models"), HEATMAP_BIAS, HEATMAP_SCALE)


@pytest.fixture(scope="module")
def app_run(tmp_path_factory, dicom_samples, models):
    """Samples + a lateral study + a truncated file + a text file -> the app, and ``pneumonitor analyze``."""
    root = tmp_path_factory.mktemp("app")
    inputs = root / "in"
    inputs.mkdir()
    for path in dicom_samples:
        shutil.copy(path, inputs / path.name)
    make_dicom(inputs / "lateral.dcm", gradient(np.uint8, 255, shape=(128, 128)), ViewPosition="LL")
    dx = next(p for p in dicom_samples if p.name == "dx_image.dcm")
    (inputs / "truncated.dcm").write_bytes(dx.read_bytes()[:3000])
    (inputs / "README.txt").write_text("not DICOM\n")
    proc = run_app(inputs, root / "out", models["models"])

    from pneumonitor.cli import main as cli_main

    code = cli_main(["analyze", *map(str, dicom_samples), "--out", str(root / "cli"), "--dlnet", str(models["dlnet"]),
                     "--lsnet", str(models["lsnet"]), "--device", "cpu", "--no-progress"])
    assert code == 0
    cli_rows = json.loads((root / "cli" / "results.json").read_text())["results"]
    return proc, root, {Path(r["image"]).name: r for r in cli_rows}


def app_rows(out: Path) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in json.loads((out / "results.json").read_text())["results"]}


def test_app_runs_and_accounts_for_every_input(app_run):
    proc, root, _ = app_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = app_rows(root / "out")
    refused = ("lateral.dcm", "truncated.dcm", "dx_image.dcm", "Fake_MONOHR1.dcm")
    assert sorted(n for n, r in rows.items() if r["status"] == "ok") == sorted(
        p.name for p in (root / "in").glob("*.dcm") if p.name not in refused
    )
    assert "lateral view" in rows["lateral.dcm"]["reason"]
    # the image QC gate of pneumonitor analyze: the lateral animal thorax and the inverted copy of the CR sample
    assert rows["dx_image.dcm"]["reason"].startswith("image QC: lateral view")
    # (the selector may already refuse the copy as a duplicate of the CR sample's SOP Instance UID)
    assert rows["Fake_MONOHR1.dcm"]["reason"].startswith(("image QC: inverted", "duplicate of SOP instance"))
    assert all(r["qc"] == "pass" for r in rows.values() if r["status"] == "ok")
    assert "could not be decoded" in rows["truncated.dcm"]["reason"]
    assert "not a readable DICOM file" in rows["README.txt"]["reason"]
    log = proc.stdout + proc.stderr
    for name in ("lateral.dcm", "truncated.dcm", "README.txt"):
        assert f"skipped {root / 'in' / name}" in log
    assert (root / "out" / "results.csv").read_text().count("\n") == len(rows) + 1
    # no partial outputs: a folder per analysed study holding exactly its objects, nothing for the lateral study
    lateral_study = pydicom.dcmread(root / "in" / "lateral.dcm").StudyInstanceUID
    folders = {p.name for p in (root / "out").iterdir() if p.is_dir()}
    assert lateral_study not in folders and not any(name.startswith(".") for name in folders)
    written = sorted(str(p.relative_to(root / "out")) for p in (root / "out").rglob("*.dcm"))
    expected = sorted(r[kind] for r in rows.values() if r["status"] == "ok" for kind in ("seg", "sr", "sc"))
    assert written == expected and len(written) == 9


def test_sr_numbers_equal_pneumonitor_analyze(app_run):
    import highdicom as hd

    _, root, cli = app_run
    ratios = []
    for name, row in app_rows(root / "out").items():
        if row["status"] != "ok":
            continue
        expected = cli[name]
        sr = hd.sr.srread(root / "out" / row["sr"])
        image_group = sr.content.get_image_measurement_groups()[0]
        values = {m.name.meaning: m.value for m in image_group.get_measurements()}
        assert values["Probability"] == pytest.approx(float(expected["pneumonia_probability"]), abs=1e-5)
        assert values["Pneumonia ratio"] == pytest.approx(float(expected["ratio_total"]), abs=0.02)
        assert values["Pneumonia severity score"] == int(expected["score_total"])
        for group, side in zip(sr.content.get_planar_roi_measurement_groups(), ("right", "left")):
            values = {m.name.meaning: m.value for m in group.get_measurements()}
            assert values["Pneumonia ratio"] == pytest.approx(float(expected[f"ratio_{side}"]), abs=0.02)
            assert values["Pneumonia severity score"] == int(expected[f"score_{side}"])
        # the app's own table says the same
        assert float(row["ratio_total"]) == pytest.approx(float(expected["ratio_total"]), abs=0.02)
        ratios.append(float(expected["ratio_total"]))
    assert len(ratios) == 3 and all(0 < r < 100 for r in ratios), ratios  # the comparison is not trivial
    assert cli["dx_image.dcm"]["status"] == "skipped" and "lateral view" in cli["dx_image.dcm"]["reason"]


def test_seg_frames_match_the_cli_masks(app_run):
    import highdicom as hd

    _, root, cli = app_run
    for name, row in app_rows(root / "out").items():
        if row["status"] != "ok":
            continue
        seg = hd.seg.segread(root / "out" / row["seg"])
        source = pydicom.dcmread(root / "in" / name, stop_before_pixels=True)
        frames = seg.get_pixels_by_source_instance(
            [source.SOPInstanceUID], segment_numbers=[1, 2, 3], combine_segments=False, skip_overlap_checks=True
        )[0].astype(bool)
        lungs = np.asarray(Image.open(root / "cli" / cli[name]["lung_mask"]))
        pneumonia = np.asarray(Image.open(root / "cli" / cli[name]["pneumonia_mask"])) > 0
        for frame, mask in ((frames[..., 0], lungs == RIGHT_LUNG_VALUE), (frames[..., 1], lungs == LEFT_LUNG_VALUE),
                            (frames[..., 2], pneumonia)):
            # TorchScript vs eager float differences may flip a pixel at a threshold edge, nothing more
            assert mask.any() and np.mean(frame != mask) < 1e-3, name


def test_uids_new_and_patient_study_copied(app_run):
    from pydicom.uid import UID

    _, root, _ = app_run
    seen = set()
    for name, row in app_rows(root / "out").items():
        if row["status"] != "ok":
            continue
        source = pydicom.dcmread(root / "in" / name, stop_before_pixels=True)
        for kind in ("seg", "sr", "sc"):
            ds = pydicom.dcmread(root / "out" / row[kind])
            for keyword in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
                            "AccessionNumber", "StudyID"):
                assert str(ds.get(keyword, "") or "") == str(source.get(keyword, "") or ""), (name, kind, keyword)
            for keyword in ("SeriesInstanceUID", "SOPInstanceUID"):
                uid = UID(ds[keyword].value)
                assert uid.is_valid and uid not in seen and uid != source.get(keyword)
                seen.add(uid)
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools)")
def test_dciodvfy_accepts_every_written_object(app_run):
    _, root, _ = app_run
    files = sorted((root / "out").rglob("*.dcm"))
    assert files
    for path in files:
        report = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (path.name, errors)


def test_bad_inputs_only_give_clear_messages_and_no_outputs(tmp_path, models, dicom_samples):
    """A lateral-only study, a truncated file and a non-DICOM file: exit status 1, reasons logged, no objects."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_dicom(inputs / "lateral-1.dcm", gradient(np.uint8, 255, shape=(128, 128)), ViewPosition="LATERAL")
    dx = next(p for p in dicom_samples if p.name == "dx_image.dcm")
    (inputs / "cut.dcm").write_bytes(dx.read_bytes()[:3000])
    (inputs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = run_app(inputs, tmp_path / "out", models["models"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "no frontal CR/DX chest radiograph could be analysed" in log
    assert "lateral view (ViewPosition LATERAL)" in log and "could not be decoded" in log
    assert "image.png is not a readable DICOM file" in log
    assert "Traceback" not in log
    assert not list((tmp_path / "out").rglob("*.dcm"))
    rows = app_rows(tmp_path / "out")
    assert {r["status"] for r in rows.values()} == {"skipped"} and len(rows) == 3


def test_empty_folder_is_clear(tmp_path, models):
    (tmp_path / "empty").mkdir()
    proc = run_app(tmp_path / "empty", tmp_path / "out", models["models"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert f"no DICOM study found in {tmp_path / 'empty'}" in log and "no input instances" in log
    assert "Traceback" not in log
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.json"]


def test_missing_models_are_clear(tmp_path):
    (tmp_path / "models").mkdir()
    proc = run_app(tmp_path / "models", tmp_path / "out", tmp_path / "models")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert "no DLNet model" in log and "Traceback" not in log
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_hostile_study_uids_delete_nothing(tmp_path, models):
    """Regression (issue 16, item 1): StudyInstanceUID ``..`` made the app delete the parent of ``-o``, ``.`` emptied
    ``-o``. Such instances are now skipped with the reason; the neighbours and earlier outputs stay."""
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    out = work / "out"
    out.mkdir(parents=True)
    (work / "neighbour.txt").write_text("keep me")
    (out / "earlier.txt").write_text("keep me too")
    image = gradient(np.uint8, 255, shape=(128, 128))
    for name, uid in (("dot.dcm", "."), ("dotdot.dcm", ".."), ("evil.dcm", "../../evil")):
        make_dicom(inputs / name, image, StudyInstanceUID=uid)
    make_dicom(inputs / "good.dcm", image)
    proc = run_app(inputs, out, models["models"], qc="off")  # the image QC gate would refuse a gradient
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert (work / "neighbour.txt").read_text() == "keep me" and (out / "earlier.txt").read_text() == "keep me too"
    assert sorted(p.name for p in work.iterdir()) == ["neighbour.txt", "out"]
    rows = app_rows(out)
    assert rows["good.dcm"]["status"] == "ok"
    for name in ("dot.dcm", "dotdot.dcm", "evil.dcm"):
        assert rows[name]["status"] == "skipped" and "is not a valid DICOM UID" in rows[name]["reason"], rows[name]
    good_study = pydicom.dcmread(inputs / "good.dcm").StudyInstanceUID
    assert sorted(p.name for p in out.iterdir()) == sorted([good_study, "earlier.txt", "results.csv", "results.json"])
