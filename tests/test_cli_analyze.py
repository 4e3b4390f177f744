"""End to end: ``pneumonitor analyze`` on real DICOM samples, PNGs and bad inputs, with small test checkpoints.

The checkpoints have random weights except for biases set so that the outputs are known: LSNet says "lung" everywhere
(the split then cuts the image at a third of its width), DLNet says "pneumonia" with probability ~1 and a constant
heatmap of ``HEATMAP`` (above the 0.8 threshold: every lung pixel is pneumonia; below it: none).
"""

import csv
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pneumonitor.networks import DLNet, LSNet, save_bundle
from pneumonitor.results import RESULT_COLUMNS

from test_reading import make_dicom, gradient

REQUIRED = (
    "image,status,reason,pneumonia_probability,positive,ratio_total,ratio_right,ratio_left,score_right,"
    "score_left,score_total,lung_mask,pneumonia_mask,overlay"
).split(",")


def make_checkpoints(folder, heatmap_value):
    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(10.0)
        dl.localization_head.output_conv.weight.zero_()
        dl.localization_head.output_conv.bias.fill_(heatmap_value)
    ls = LSNet(width=0.125)
    with torch.no_grad():
        ls.head.weight.zero_()
        ls.head.bias.fill_(10.0)
    return save_bundle(dl, folder / "dl", [128, 128]), save_bundle(ls, folder / "ls", [128, 128])


def run_cli(*args):
    """The real entry point in a child process (used once: imports are slow on a busy 2-core machine)."""
    return subprocess.run([sys.executable, "-m", "pneumonitor", *map(str, args)], capture_output=True, text=True)


def run_main(caplog, *args):
    """The same command in this process: (exit code, log text)."""
    from pneumonitor.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main([str(a) for a in args])
    return code, caplog.text


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(gradient(np.uint8, 255, shape=(200, 240))).save(folder / "gradient.png")
    covid = sorted((shared_data / "covid-chestxray-dataset" / "images").glob("*.png"))[0]
    (folder / covid.name).write_bytes(covid.read_bytes())
    make_dicom(folder / "lateral.dcm", gradient(np.uint8, 255), ViewPosition="LL")
    (folder / "truncated.dcm").write_bytes((shared_data / "cxr-dicom-samples" / "dx_image.dcm").read_bytes()[:3000])
    return [shared_data / "cxr-dicom-samples", folder]


def test_analyze_end_to_end(tmp_path, inputs):
    dl, ls = make_checkpoints(tmp_path, heatmap_value=0.9)
    out = tmp_path / "out"
    # --qc off: this test is about the mechanics on every readable input (the gate: tests/test_qc.py)
    proc = run_cli("analyze", *inputs, "--out", out, "--dlnet", dl, "--lsnet", ls, "--batch-size", 3, "--qc", "off")
    assert proc.returncode == 0, proc.stderr
    assert "analyzed 9 image(s): 7 ok (7 positive), 2 skipped" in proc.stdout
    with (out / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[: len(REQUIRED)] == REQUIRED
        assert reader.fieldnames == RESULT_COLUMNS
        rows = {r["image"].rsplit("/", 1)[-1]: r for r in reader}
    assert rows["lateral.dcm"]["status"] == "skipped" and "lateral view" in rows["lateral.dcm"]["reason"]
    assert rows["truncated.dcm"]["status"] == "skipped" and rows["truncated.dcm"]["reason"]
    assert rows["truncated.dcm"]["ratio_total"] == ""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 7
    for row in ok:
        # all lung is pneumonia: 100 % and the maximum score
        assert float(row["ratio_total"]) == 100.0 and row["score_total"] == "8" and row["positive"] == "1"
        size = (int(row["columns"]), int(row["rows"]))
        for column in ("lung_mask", "pneumonia_mask", "heatmap", "overlay"):
            with Image.open(out / row[column]) as img:
                assert img.size == size, column
                assert img.mode == ("RGB" if column == "overlay" else "L")
        lungs = np.asarray(Image.open(out / row["lung_mask"]))
        assert set(np.unique(lungs)) == {128, 255}
        # patient's right lung (255) is on the image left
        assert lungs[:, 0].max() == 255 and lungs[:, -1].max() == 128
    dicom_row = rows["gdcm-CR-MONO1-10-chest.dcm"]
    assert dicom_row["study_instance_uid"] and dicom_row["sop_instance_uid"] and dicom_row["view_position"] == "PA"
    assert (dicom_row["rows"], dicom_row["columns"]) == ("440", "440")
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["classification_threshold"] == 0.62
    assert report["settings"]["dlnet"]["network"]["backbone"] == "resnet18"
    assert len(report["results"]) == 9
    assert not list(out.rglob("*.tmp"))


def test_heatmap_below_threshold_gives_zero_ratio(tmp_path, dicom_samples, caplog):
    dl, ls = make_checkpoints(tmp_path, heatmap_value=0.5)
    out = tmp_path / "out"
    code, log = run_main(caplog, "analyze", dicom_samples[0], "--out", out, "--dlnet", dl, "--lsnet", ls, "--no-progress")
    assert code == 0, log
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["status"] == "ok" and row["positive"] == "1"
    assert float(row["ratio_total"]) == 0.0 and row["score_total"] == "0"
    # lowering the heatmap threshold below the heatmap turns every lung pixel into pneumonia
    run_main(caplog, "analyze", dicom_samples[0], "--out", out, "--dlnet", dl, "--lsnet", ls, "--heatmap-threshold", "0.4",
             "--no-progress")
    row = next(csv.DictReader((out / "results.csv").open()))
    assert float(row["ratio_total"]) == 100.0


def test_missing_weights_stop_with_a_clear_message(tmp_path, dicom_samples, monkeypatch, caplog):
    monkeypatch.setenv("PNEUMONITOR_BUNDLES", str(tmp_path / "nowhere"))
    out = tmp_path / "out"
    code, log = run_main(caplog, "analyze", dicom_samples[0], "--out", out)
    assert code == 2
    assert "No trained DLNet weights found" in log and "--dlnet" in log and str(tmp_path / "nowhere") in log
    assert not (out / "results.csv").exists()


def test_wrong_checkpoint_kind_and_empty_input(tmp_path, dicom_samples, caplog):
    dl, ls = make_checkpoints(tmp_path, heatmap_value=0.9)
    code, log = run_main(caplog, "analyze", dicom_samples[0], "--out", tmp_path / "o", "--dlnet", ls, "--lsnet", ls)
    assert code == 2 and "not DLNet" in log
    (tmp_path / "empty").mkdir()
    code, log = run_main(caplog, "analyze", tmp_path / "empty", "--out", tmp_path / "o", "--dlnet", dl, "--lsnet", ls)
    assert code == 2 and "no input images" in log
    code, log = run_main(caplog, "analyze", dicom_samples[0], "--out", tmp_path / "o", "--dlnet", dl, "--lsnet", ls,
                         "--heatmap-threshold", "1.5")
    assert code == 2 and "--heatmap-threshold must be in [0, 1]" in log
    code, log = run_main(caplog, "analyze", dicom_samples[0], "--out", tmp_path / "o", "--dlnet", dl, "--lsnet", ls,
                         "--operating-point", "high-specificity")
    assert code == 2 and "operating point 'high-specificity' is not one of the DLNet bundle's" in log
    assert not (tmp_path / "o").exists()
