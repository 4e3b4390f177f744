"""The shipped default weights (bundles/dlnet, bundles/lsnet): what a fresh clone's `pneumonitor analyze` loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pneumonitor.cli import main
from pneumonitor.networks import load_network

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> dict:
    paths = {name: ROOT / "bundles" / name / "models" / "model.pt" for name in ("dlnet", "lsnet")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.skip(f"no shipped weights: {missing}")
    return paths


def test_bundles_describe_their_weights_and_operating_point(shipped):
    dlnet = load_network(ROOT / "bundles" / "dlnet", "DLNet")
    lsnet = load_network(ROOT / "bundles" / "lsnet", "LSNet")
    assert dlnet.image_size == (224, 224) and lsnet.image_size == (224, 224)
    # chosen on validation (scripts/train_default_models.sh) and read by analyze as its defaults
    assert 0.0 < dlnet.settings["classification_threshold"] < 1.0
    assert 0.0 < dlnet.settings["heatmap_threshold"] < 1.0
    assert "nearest (0,1)" in dlnet.settings["operating_point_basis"]
    assert shipped["dlnet"].stat().st_size + shipped["lsnet"].stat().st_size < 150e6


def test_readme_main_command_runs_without_flags(shipped, dicom_samples, tmp_path):
    out = tmp_path / "out"
    assert main(["analyze", str(dicom_samples[0].parent), "--out", str(out), "--no-progress"]) == 0
    document = json.loads((out / "results.json").read_text())
    rows = document["results"]
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    text = json.dumps(document)
    assert hashlib.sha256(shipped["dlnet"].read_bytes()).hexdigest() in text  # the weights are recorded
    dlnet_settings = load_network(ROOT / "bundles" / "dlnet", "DLNet").settings
    assert f'"classification_threshold": {dlnet_settings["classification_threshold"]}' in text


def test_shipped_dlnet_separates_pediatric_test_images(shipped, shared_data, tmp_path):
    from pneumonitor.datasets.pediatric import convert_pediatric
    from pneumonitor.evaluation.classification import roc_auc

    items, _ = convert_pediatric(shared_data / "pediatric-pneumonia")
    test = [i for i in items if i["split"] == "test"]
    chosen = [i for i in test if i["label"] == 0][:10] + [i for i in test if i["label"] == 1][:10]
    out = tmp_path / "ped"
    assert main(["analyze", *[i["image"] for i in chosen], "--out", str(out), "--no-progress"]) == 0
    import csv

    with open(out / "results.csv") as handle:
        scores = {r["image"]: float(r["pneumonia_probability"]) for r in csv.DictReader(handle)}
    labels = [i["label"] for i in chosen]
    probabilities = [scores[str(Path(i["image"]).resolve())] for i in chosen]
    # measured with the shipped weights: test-split pediatric AUC 0.98 (model card); 20 images leave room
    assert roc_auc(labels, probabilities) > 0.85
    assert np.median([p for p, y in zip(probabilities, labels) if y == 1]) > 0.5
