"""Image QC gate (``pneumonitor.qc``, ``bundles/qc``), its use by ``pneumonitor analyze``, and the uncertainty columns."""

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pneumonitor.reading import read_radiograph
from pneumonitor.qc import QC_CLASSES, QCGate, make_kind, qc_input
from pneumonitor.severity import SeverityResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bundle_network():
    from monai.bundle import ConfigParser

    from pneumonitor.qc import default_qc_bundle

    config = json.loads((default_qc_bundle() / "configs" / "inference.json").read_text())
    return ConfigParser({"network_def": config["network_def"]}).get_parsed_content("network_def"), config


@pytest.fixture(scope="module")
def gate():
    return QCGate.from_bundle()


def test_make_kind_rotations_are_clockwise_and_inversion_is_polarity():
    upright = np.zeros((4, 6), np.float32)
    upright[0] = 1.0  # the head end
    assert make_kind(upright, "rotated_90")[:, -1].all() and make_kind(upright, "rotated_90").shape == (6, 4)
    assert make_kind(upright, "rotated_270")[:, 0].all()
    assert make_kind(upright, "rotated_180")[-1].all()
    np.testing.assert_array_equal(make_kind(upright, "inverted"), 1.0 - upright)
    with pytest.raises(ValueError):
        make_kind(upright, "lateral")


def test_qc_input_keeps_polarity():
    image = np.random.default_rng(0).random((130, 90)).astype(np.float32)
    x, inverted = qc_input(image), qc_input(1.0 - image)
    assert x.shape == (1, 96, 96) and abs(float(x.mean())) < 1e-5
    torch.testing.assert_close(inverted, -x, atol=1e-4, rtol=0)


def test_decide_refuses_below_the_threshold_and_names_the_likeliest_other_class():
    network, _ = bundle_network()
    gate = QCGate(network, frontal_threshold=0.3)
    p = dict.fromkeys(QC_CLASSES, 0.0)
    assert gate.decide(np.array(list({**p, "frontal": 0.35, "lateral": 0.6}.values()))).passed
    refused = gate.decide(np.array(list({**p, "frontal": 0.25, "rotated_90": 0.5, "lateral": 0.25}.values())))
    assert refused.label == "rotated_90" and refused.finding == "rotated 90°"
    assert refused.refusal_reason().startswith("image QC: rotated 90° (p=0.50)")


def test_shipped_gate_on_the_readme_dicom_samples(gate, dicom_samples):
    labels = {p.name: gate.check([read_radiograph(p).pixels])[0] for p in dicom_samples}
    # dx_image: a lateral thorax (no ViewPosition); Fake_MONOHR1: the CR sample's pixels labelled MONOCHROME1
    assert labels["dx_image.dcm"].label == "lateral", labels["dx_image.dcm"]
    assert labels["Fake_MONOHR1.dcm"].label == "inverted", labels["Fake_MONOHR1.dcm"]
    others = [name for name in labels if name not in ("dx_image.dcm", "Fake_MONOHR1.dcm")]
    assert all(labels[name].passed for name in others), {n: labels[n] for n in others}


def test_shipped_gate_on_held_out_patients(gate, shared_data):
    """A sample of the held-out test split (the bundle card's numbers come from all of it)."""
    import pandas as pd

    from pneumonitor.qc.training import split_of

    seed = json.loads((gate.source / "configs" / "train.json").read_text())["seed"]
    nih = pd.read_csv(shared_data / "nih-chestxray-subset" / "manifest.csv", dtype={"patient_id": str})
    nih = nih[[split_of(f"nih:{p}", seed) == "test" for p in nih.patient_id]].head(30)
    frontal = [read_radiograph(shared_data / "nih-chestxray-subset" / f).pixels for f in nih.stored_file]
    covid = pd.read_csv(shared_data / "covid-chestxray-dataset" / "manifest.csv")
    laterals = covid[(covid.view == "L") & np.array([split_of(f"covid:{p}", seed) == "test" for p in covid.patientid])]
    lateral = [read_radiograph(shared_data / "covid-chestxray-dataset" / f).pixels for f in laterals.stored_file]
    assert len(frontal) == 30 and len(lateral) >= 5
    refused_frontal = sum(not r.passed for r in gate.check(frontal))
    assert refused_frontal <= 1
    for kind in ("inverted", "rotated_90", "rotated_180", "rotated_270"):
        results = gate.check([make_kind(image, kind) for image in frontal])
        assert sum(not r.passed for r in results) >= 27, kind
        assert sum(r.label == kind for r in results) >= 24, kind
    assert sum(not r.passed for r in gate.check(lateral)) >= len(lateral) - 1


def test_text_and_photographs_are_not_chest_radiographs(gate):
    import skimage.color
    import skimage.data

    from pneumonitor.qc.training import text_page

    page = text_page(np.random.default_rng(12345))
    photo = skimage.color.rgb2gray(skimage.data.astronaut())
    results = gate.check([page, photo.astype(np.float32)])
    assert [r.label for r in results] == ["not_chest_radiograph"] * 2, results


def test_bundle_inference_config_writes_qc_csv(tmp_path, dicom_samples):
    import subprocess
    import sys

    from pneumonitor.qc import default_qc_bundle

    configs = default_qc_bundle() / "configs"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "inference.json"),
         "--meta_file", str(configs / "metadata.json"), "--bundle_root", str(default_qc_bundle()),
         "--dataset_dir", str(dicom_samples[0].parent), "--output_dir", str(tmp_path), "--image_extensions", "['dcm']"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader((tmp_path / "qc.csv").open())}
    assert len(rows) == 5 and rows["dx_image.dcm"]["finding"] == "lateral view"
    assert rows["Fake_MONOHR1.dcm"]["finding"] == "inverted" and rows["gdcm-CR-MONO1-10-chest.dcm"]["label"] == "frontal"
    assert abs(sum(float(rows["dx_image.dcm"][f"p_{c}"]) for c in QC_CLASSES) - 1) < 1e-3


# -- the gate and the uncertainty in pneumonitor analyze ----------------------------------------------------------
def rows_of(out):
    with (out / "results.csv").open() as handle:
        return {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader(handle)}


def run_analyze(caplog, *args):
    from pneumonitor.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        return main([str(a) for a in args])


def test_analyze_qc_on_warn_off(tmp_path, dicom_samples, caplog):
    from test_cli_analyze import make_checkpoints

    dl, ls = make_checkpoints(tmp_path, heatmap_value=0.9)
    common = [*dicom_samples, "--dlnet", dl, "--lsnet", ls, "--no-progress", "--workers", 0]
    assert run_analyze(caplog, "analyze", *common, "--out", tmp_path / "on") == 0
    rows = rows_of(tmp_path / "on")
    assert rows["dx_image.dcm"]["status"] == "skipped" and "lateral view" in rows["dx_image.dcm"]["reason"]
    assert rows["Fake_MONOHR1.dcm"]["status"] == "skipped" and "inverted" in rows["Fake_MONOHR1.dcm"]["reason"]
    assert rows["dx_image.dcm"]["lung_mask"] == "" and rows["dx_image.dcm"]["ratio_total"] == ""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["qc"] == "pass" for r in ok)
    # every ok row carries its uncertainty
    for row in ok:
        assert float(row["pneumonia_probability_low"]) <= float(row["pneumonia_probability"]) <= float(
            row["pneumonia_probability_high"])
        assert int(row["score_total_low"]) <= int(row["score_total"]) <= int(row["score_total_high"])
        assert row["uncertain"] in ("0", "1") and float(row["ratio_total_sd"]) >= 0
    assert len(list((tmp_path / "on" / "overlays").glob("*.png"))) == 3
    assert "PatientOrientation absent" in rows["gdcm-CR-MONO1-10-chest.dcm"]["warnings"]

    assert run_analyze(caplog, "analyze", *common, "--out", tmp_path / "warn", "--qc", "warn") == 0
    rows = rows_of(tmp_path / "warn")
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["dx_image.dcm"]["qc"].startswith("lateral view (p=")
    assert rows["Fake_MONOHR1.dcm"]["qc"].startswith("inverted (p=")
    # out-of-distribution flags: a 5-year-old's 169x211 DX; the test LSNet calls every pixel lung
    assert "pediatric (PatientAge 005Y)" in rows["dx_image.dcm"]["ood"]
    assert "low resolution (169x211 px)" in rows["dx_image.dcm"]["ood"]
    assert "implausible lung area (100 % of the image)" in rows["dx_image.dcm"]["ood"]

    assert run_analyze(caplog, "analyze", *common, "--out", tmp_path / "off", "--qc", "off", "--uncertainty", "off") == 0
    rows = rows_of(tmp_path / "off")
    assert all(r["status"] == "ok" and r["qc"] == "" and r["ratio_total_sd"] == "" for r in rows.values())
    report = json.loads((tmp_path / "off" / "results.json").read_text())
    assert report["settings"]["qc"] == "off" and report["settings"]["qc_gate"] is None


def severity(p, ratio_right, ratio_left, threshold=0.4):
    from pneumonitor.severity import lung_score

    positive = p >= threshold
    right, left = (ratio_right, ratio_left) if positive else (0.0, 0.0)
    empty = np.zeros((2, 2), bool)
    return SeverityResult(p, positive, (right + left) / 2, right, left, lung_score(right), lung_score(left),
                          lung_score(right) + lung_score(left), empty, empty, empty)


def test_spread_flags_an_interval_across_the_operating_point():
    from pneumonitor.inference.analyzer import summarize_spread

    sure = summarize_spread(severity(0.9, 40, 10), [severity(0.88, 42, 12)], [], 0.4)
    assert sure["uncertain"] == 0 and sure["pneumonia_probability_sd"] == pytest.approx(0.02 / np.sqrt(2), abs=1e-6)
    assert sure["ratio_right_sd"] == pytest.approx(2 / np.sqrt(2), abs=0.01)
    assert sure["score_total_low"] == 3 and sure["score_total_high"] == 3  # 2 + 1: the spread stays inside the bins
    wide = summarize_spread(severity(0.9, 30, 10), [severity(0.88, 34, 12)], [], 0.4)
    assert (wide["score_total_low"], wide["score_total_high"]) == (2, 3)  # 30 - 1.96 * 2.83 < 25: score 1 possible
    torn = summarize_spread(severity(0.5, 60, 20), [severity(0.3, 0, 0)], [0.45, 0.55], 0.4)
    assert torn["uncertain"] == 1 and torn["pneumonia_probability_low"] < 0.4 < torn["pneumonia_probability_high"]
    assert torn["score_total_low"] == 0 and torn["score_total_high"] >= 4


def test_mc_dropout_passes_vary_and_leave_the_network_in_eval_mode(tmp_path):
    from pneumonitor.networks import DLNet, LSNet
    from pneumonitor.networks import LoadedNetwork
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer

    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16), dropout=0.5)
    ls = LSNet(width=0.125)
    loaded = [LoadedNetwork(network=n, image_size=(64, 64), source=tmp_path, sha256="", settings={}) for n in (dl, ls)]
    analyzer = Analyzer(*loaded, settings=AnalysisSettings(uncertainty="flip+mc", mc_samples=6))
    image = torch.rand(2, 3, 64, 64)
    passes, mc = analyzer.infer_spread(image, torch.rand(2, 1, 64, 64))
    assert len(passes) == 1 and mc.shape == (6, 2) and float(mc.std(axis=0).min()) > 0
    assert not any(m.training for m in dl.modules())
    # the mirrored pass is the network on the mirrored input, mirrored back
    probability, heatmap, _, _ = analyzer.infer(image.flip(-1), torch.rand(2, 1, 64, 64))
    np.testing.assert_allclose(passes[0][1], heatmap[..., ::-1], atol=1e-5)


def test_ood_flags_stay_quiet_on_an_adult_frontal_with_plausible_lungs():
    from pathlib import Path

    from pneumonitor.reading import Radiograph
    from pneumonitor.qc.ood import ood_flags

    import skimage.data

    # any sharp, clean 512 px image will do for the lung-mask flags (the noise/blur flags: the next test)
    pixels = skimage.data.camera().astype(np.float32) / 255
    radiograph = Radiograph(pixels, Path("x.png"), meta={"patient_age": "062Y"})
    right, left = np.zeros((512, 512), bool), np.zeros((512, 512), bool)
    right[100:400, 60:230], left[100:400, 280:440] = True, True  # 38 % of the image
    sev = SeverityResult(0.1, False, 0, 0, 0, 0, 0, 0, np.zeros_like(right), right, left)
    assert ood_flags(radiograph, sev) == []
    left[:] = False
    left[100:150, 280:300] = True
    assert ood_flags(radiograph, sev) == ["implausible lung shape (one lung 51.0x the other)"]


def test_ood_noise_and_blur_flags_on_a_real_radiograph(shared_data):
    from pathlib import Path

    from scipy import ndimage

    from pneumonitor.reading import Radiograph
    from pneumonitor.qc.ood import ood_flags

    source = sorted((shared_data / "nih-chestxray-subset" / "images").glob("*.jpg"))[0]
    clean = read_radiograph(source).pixels
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    blurred = ndimage.gaussian_filter(clean, 4).astype(np.float32)
    flags = {name: ood_flags(Radiograph(pixels, Path(name), meta={})) for name, pixels in
             (("clean", clean), ("noisy", noisy), ("blurred", blurred))}
    assert flags["clean"] == []
    assert len(flags["noisy"]) == 1 and flags["noisy"][0].startswith("heavy noise")
    assert len(flags["blurred"]) == 1 and flags["blurred"][0].startswith("heavy blur")
