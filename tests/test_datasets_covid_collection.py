"""COVID-19 Image Data Collection converter on the real collection in ../shared/data."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumonitor.cli import main
from pneumonitor.datasets.bounding_boxes import boxes_to_mask
from pneumonitor.datasets.covid_collection import pneumonia_label
from pneumonitor.datasets.images import image_size, read_gray
from pneumonitor.severity import lung_score, pneumonia_ratio


@pytest.fixture(scope="module")
def converted(shared_data: Path, tmp_path_factory) -> Path:
    root = shared_data / "covid-chestxray-dataset"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"{root}/manifest.csv not found")
    out = tmp_path_factory.mktemp("covid")
    assert main(["datasets", "covid-collection", "--root", str(root), "--out", str(out), "--seed", "0", "--quiet"]) == 0
    return out


def _items(path: Path) -> list[dict]:
    datalist = json.loads(path.read_text())
    return [{**item, "split": split} for split in ("training", "validation", "test") for item in datalist[split]]


def test_labels_of_findings():
    assert pneumonia_label("No Finding") == 0
    assert pneumonia_label("COVID-19, ARDS") == 1 and pneumonia_label("Pneumocystis") == 1
    assert pneumonia_label("todo") is None and pneumonia_label(float("nan")) is None


def test_frontal_only_and_patient_level(converted: Path):
    items = _items(converted / "datalist.json")
    assert len(items) > 350
    assert {item["view"] for item in items} <= {"PA", "AP", "AP Supine"}
    assert {item["label"] for item in items} == {0, 1}
    excluded = json.loads((converted / "excluded.json").read_text())
    reasons = Counter(row["reason"] for row in excluded)
    assert reasons["not a frontal view (view 'L')"] > 30
    splits_of_patient: dict[str, set] = {}
    for item in items:
        splits_of_patient.setdefault(item["patient_id"], set()).add(item["split"])
    assert all(len(s) == 1 for s in splits_of_patient.values())
    # the lung segmentation datalist uses the same patient assignment
    for item in _items(converted / "lsnet_datalist.json"):
        if item["patient_id"] in splits_of_patient:
            assert splits_of_patient[item["patient_id"]] == {item["split"]}
        assert Path(item["label"]).is_file() and item["ignore_value"] == 127
    assert all(Path(item["image"]).is_absolute() and Path(item["image"]).is_file() for item in items)


def test_severity_sources(converted: Path):
    items = _items(converted / "datalist.json")
    scored = [item for item in items if "severity" in item]
    assert Counter(item["severity_source"] for item in scored)["cohen2020"] >= 50
    for item in scored:
        assert 0 <= item["severity"] <= 8
        if item["severity_source"] == "cohen2020" and "severity_covidx" in item:
            assert abs(item["severity"] - item["severity_covidx"]) < 0.05  # the two sources agree
    brixia = [item for item in items if "brixia_S" in item]
    assert brixia
    for item in brixia:
        zones = item["brixia_S"]
        if "brixia_J" not in item:
            assert item["brixia_right"] == sum(zones[:3]) and item["brixia_left"] == sum(zones[3:])


def test_radiologist_masks_boxes_and_involvement(converted: Path, shared_data: Path):
    items = [item for item in _items(converted / "datalist.json") if "mask" in item]
    assert len(items) == 78
    root = shared_data / "covid-chestxray-dataset" / "annotations" / "generalblockchain-masks"
    checked = 0
    for item in items:
        pneumonia = read_gray(item["mask"]) > 0
        assert pneumonia.shape == image_size(item["image"])
        folder = root / Path(item["mask"]).stem
        expected = np.zeros_like(pneumonia)
        for name in ("ground_glass_opacities", "consolidation"):
            if (folder / f"{name}.png").is_file():
                expected |= read_gray(folder / f"{name}.png") > 0
        assert np.array_equal(pneumonia, expected)
        # every box is tight around mask pixels, and the boxes cover all but speckles
        covered = boxes_to_mask(item["boxes"], pneumonia.shape)
        assert (pneumonia & ~covered).sum() <= 1e-4 * pneumonia.size * 4
        for x0, y0, x1, y1 in item["boxes"]:
            window = pneumonia[y0:y1, x0:x1]
            assert window[0].any() and window[-1].any() and window[:, 0].any() and window[:, -1].any()
        if "involvement_right" in item:
            right = read_gray(item["lung_mask_right"]) > 0
            assert item["involvement_right"] == pytest.approx(pneumonia_ratio(pneumonia, right), abs=1e-3)
            assert item["severity_right"] == lung_score(item["involvement_right"])
            checked += 1
        assert item["lung_mask_source"] == "radiologist"
    assert checked > 60
    gb_copies = [item for item in items if item["image"].endswith("image_gb_version.png")]
    assert len(gb_copies) >= 2  # ciaa199.pdf-001-*: masks aligned to GeneralBlockchain's copy


def test_v7_masks_flag_ignore_value(converted: Path):
    v7 = [item for item in _items(converted / "datalist.json") if item.get("lung_mask_source") == "v7"]
    assert v7 and all(item["lung_mask_ignore_value"] == 127 for item in v7)
    values = set(np.unique(read_gray(v7[0]["lung_mask"])).tolist())
    assert values <= {0, 127, 255}
    assert not any(math.isnan(item["offset_days"]) for item in v7 if item["offset_days"] is not None)


def test_lung_boxes(converted: Path):
    boxed = [item for item in _items(converted / "datalist.json") if "lung_box_right" in item]
    assert len(boxed) > 80
    for item in boxed:
        right, left = item["lung_box_right"], item["lung_box_left"]
        height, width = image_size(item["image"])
        assert 0 <= right[0] < right[2] <= width + 1 and 0 <= left[1] < left[3] <= height + 1
        # the patient's right lung lies on the image left
        assert (right[0] + right[2]) / 2 < (left[0] + left[2]) / 2
