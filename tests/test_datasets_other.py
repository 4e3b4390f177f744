"""Pediatric, JSRT and COVIDx-S converters and the training mix, on the real data in ../shared/data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumonitor.cli import main
from pneumonitor.datasets.covidx_severity import convert_covidx_severity
from pneumonitor.datasets.images import read_gray
from pneumonitor.datasets.mix import MIX_KEYS
from pneumonitor.datasets.pediatric import convert_pediatric, pediatric_patient_id


def _items(path: Path) -> list[dict]:
    datalist = json.loads(path.read_text())
    return [{**item, "split": split} for split in ("training", "validation", "test") for item in datalist[split]]


def test_pediatric_patient_ids():
    assert pediatric_patient_id("images/bacterial_person1000_bacteria_2931.jpg") == "person1000"
    assert pediatric_patient_id("viral_person1_virus_6.jpg") == "person1"
    assert pediatric_patient_id("normal_IM-0115-0001.jpg") == "IM-0115"
    assert pediatric_patient_id("normal_NORMAL2-IM-0372-0001.jpg") == "NORMAL2-IM-0372"


def test_pediatric(shared_data: Path):
    items, excluded = convert_pediatric(shared_data / "pediatric-pneumonia", seed=0)
    assert len(items) == 720 and not excluded
    assert Counter(item["label"] for item in items) == {0: 240, 1: 480}
    splits: dict[str, set] = {}
    for item in items:
        splits.setdefault(item["patient_id"], set()).add(item["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert len(splits) < 720  # several images per patient exist, and stay together


def test_covidx_severity(shared_data: Path):
    items, excluded = convert_covidx_severity(shared_data / "covidx-severity-extra")
    assert len(items) + len(excluded) == 38 and len(items) >= 30
    assert all(item["split"] == "test" and item["label"] == 1 and 0 <= item["severity"] <= 8 for item in items)


@pytest.fixture(scope="module")
def mix(shared_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mix")
    assert main(["datasets", "mix", "--data-root", str(shared_data), "--out", str(out), "--seed", "0", "--quiet"]) == 0
    return out


def test_mix_dlnet_items(mix: Path):
    items = _items(mix / "datalist.json")
    assert all(tuple(item) == MIX_KEYS for item in items)  # same keys everywhere (split last)
    sources = Counter(item["source"] for item in items)
    assert sources["pediatric"] == 720 and sources["jsrt"] == 247 and sources["covid-collection"] > 350
    assert all(item["label"] == 0 for item in items if item["source"] == "jsrt")
    for item in items:
        if item["label"] == 0:
            assert item["boxes"] == [] and item["mask"] == "" and item["has_localization"] == 1
        elif item["mask"]:
            assert item["has_localization"] == 1 and Path(item["mask"]).is_file()
        else:
            assert item["has_localization"] == 0 and item["boxes"] == []
    assert sum(1 for item in items if item["mask"]) >= 70
    # COVID-19 images with expert extent 0 are negatives, so the adult positives' source has its own negatives
    relabelled = [item for item in items if item["relabelled"]]
    assert len(relabelled) >= 10 and all(item["label"] == 0 and "extent 0" in item["relabelled"] for item in relabelled)
    covid_negatives = [i for i in items if i["source"] == "covid-collection" and i["label"] == 0]
    assert len(covid_negatives) >= len(relabelled) + 10
    splits: dict[str, set] = {}
    for item in items:
        splits.setdefault(item["patient_id"], set()).add(item["split"])
    assert all(len(s) == 1 for s in splits.values())
    counts = Counter(item["split"] for item in items)
    assert counts["validation"] > 50 and counts["training"] > 5 * counts["validation"]


def test_mix_lsnet_items(mix: Path):
    items = _items(mix / "lsnet_datalist.json")
    sources = Counter(item["source"] for item in items)
    assert sources["jsrt"] == 247 and sources["covid-collection/v7"] > 200 and sources["covid-collection/lungvae"] > 0
    jsrt = next(item for item in items if item["source"] == "jsrt")
    mask = read_gray(jsrt["label"])
    assert set(np.unique(mask).tolist()) == {0, 255}
    stem = Path(jsrt["image"]).stem
    root = Path(jsrt["image"]).parents[1] / "masks"
    union = (read_gray(root / "right_lung" / f"{stem}.png") > 0) | (read_gray(root / "left_lung" / f"{stem}.png") > 0)
    assert np.array_equal(mask > 0, union)
    summary = json.loads((mix / "summary.json").read_text())
    assert summary["lsnet_datalist"]["validation"]["images"] > 20


def test_collection_and_mix_share_default_splits():
    """Same defaults, so the covid-collection test split is exactly the mix's (no training patient is tested on)."""
    from pneumonitor.cli import build_parser

    parser = build_parser()
    collection = parser.parse_args(["datasets", "covid-collection", "--out", "x"])
    mix = parser.parse_args(["datasets", "mix", "--out", "x"])
    assert (collection.fractions, collection.seed) == (mix.fractions, mix.seed) == ((0.8, 0.1, 0.1), 0)
