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
    # LSNet's lungs for ~1,300 positives take minutes on CPU: predict_lung_masks has its own test
    assert main(["datasets", "mix", "--data-root", str(shared_data), "--out", str(out), "--seed", "0", "--quiet",
                 "--lsnet", "none"]) == 0
    return out


def test_mix_dlnet_items(mix: Path):
    items = _items(mix / "datalist.json")
    assert all(set(MIX_KEYS) <= set(item) for item in items)  # the keys training needs, everywhere
    sources = Counter(item["source"] for item in items)
    assert sources["pediatric"] == 720 and sources["jsrt"] == 247 and sources["covid-collection"] > 350
    assert sources["nih"] == 792 and sources["rsna-normals"] == 3000 and sources["hannover"] == 169
    assert all(item["label"] == 0 for item in items if item["source"] in ("jsrt", "rsna-normals"))
    # adult normals and adult positives each come from several sources: no source predicts the label
    adult = ("covid-collection", "nih", "rsna-normals", "hannover", "jsrt", "covidx-s-extra")
    assert len({i["source"] for i in items if i["source"] in adult and i["label"] == 0}) >= 4
    assert len({i["source"] for i in items if i["source"] in adult and i["label"] == 1}) >= 4
    for item in items:
        if item["label"] == 0:
            assert item["boxes"] == [] and item["mask"] == "" and item["has_localization"] == 1
        elif item["mask"]:
            assert item["has_localization"] == 1 and Path(item["mask"]).is_file()
        elif item["source"] == "nih" and item["boxes"]:  # NIH pneumonia boxes localize, as the paper's RSNA boxes
            assert item["has_localization"] == 1
        else:
            assert item["has_localization"] == 0 and item["boxes"] == []
        assert item["extent"] == (item["severity"] if "severity" in item else -1.0)
        # lungs for the weak terms: human masks where they exist (LSNet's are added unless --lsnet none)
        assert item["lung_region"] == item.get("lung_mask", "")
    assert sum(1 for item in items if item["source"] == "nih" and item["has_localization"] and item["label"]) >= 20
    assert not [i for i in items if i["source"] == "covidx-s-extra" and i["split"] == "training"]
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


def test_adult_converters(shared_data: Path):
    from pneumonitor.datasets.hannover import convert_hannover
    from pneumonitor.datasets.nih import convert_nih
    from pneumonitor.datasets.rsna_normals import convert_rsna_normals

    nih, excluded = convert_nih(shared_data / "nih-chestxray-subset")
    assert not excluded and len(nih) == 792 and sum(i["label"] for i in nih) == 398
    assert len({i["patient_id"] for i in nih}) == 546
    boxed = [i for i in nih if i["boxes"]]
    assert len(boxed) >= 25 and all(i["label"] == 1 for i in boxed)
    for item in boxed:  # stored-pixel boxes inside the 512 px image
        assert all(0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512 for x0, y0, x1, y1 in item["boxes"])
    rsna, _ = convert_rsna_normals(shared_data / "rsna-normals-224")
    assert len(rsna) == 3000 and not any(i["label"] for i in rsna) and len({i["patient_id"] for i in rsna}) == 3000
    hannover, _ = convert_hannover(shared_data / "hannover-covid")
    assert len(hannover) == 169 and all(i["label"] == 1 for i in hannover)
    assert len({i["patient_id"] for i in hannover}) == 49
    assert sum(i["icu"] for i in hannover) >= 100 and 0 < sum(i["died"] for i in hannover) < 20
    for items in (nih, rsna, hannover):
        splits: dict[str, set] = {}
        for item in items:
            splits.setdefault(item["patient_id"], set()).add(item["split"])
        assert all(len(s) == 1 for s in splits.values())  # patient-level
        counts = Counter(i["split"] for i in items)
        assert counts["validation"] >= 0.1 * len(items) and counts["test"] >= 0.1 * len(items)


def test_clinical_course_flags():
    from pneumonitor.datasets.hannover import clinical_course

    in_icu = clinical_course({"admission_offset": "-3", "icu_admission_offset": "-2.0", "icu_release_offset": "4.0",
                              "death_offset": ""})
    assert (in_icu["icu"], in_icu["icu_at_exam"], in_icu["died"]) == (1, 1, 0)
    later = clinical_course({"admission_offset": "0", "icu_admission_offset": "2.0", "icu_release_offset": "",
                             "death_offset": "9.0"})
    assert (later["icu"], later["icu_at_exam"], later["died"]) == (1, 0, 1)
    released = clinical_course({"icu_admission_offset": "-9", "icu_release_offset": "-1"})
    assert released["icu_at_exam"] == 0


def test_lsnet_lung_masks_for_positives_without_human_lungs(shared_data: Path, tmp_path: Path):
    from pneumonitor.datasets.lungs import predict_lung_masks
    from pneumonitor.datasets.nih import convert_nih

    nih, _ = convert_nih(shared_data / "nih-chestxray-subset")
    items = [dict(i, lung_region="") for i in nih if i["label"] == 1][:3] + [dict(nih[0], lung_region="")]
    human = dict(items[0], lung_region="/a/human/mask.png")
    items.append(human)
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "lsnet"
    assert predict_lung_masks(items, bundle, tmp_path, progress=False) == 3
    for item in items[:3]:
        mask = read_gray(item["lung_region"]) > 0
        assert item["lung_region_source"] == "lsnet" and 0.15 < mask.mean() < 0.6  # two lungs, not noise
    assert items[3]["lung_region"] == "" and human["lung_region"] == "/a/human/mask.png"  # negatives, human kept
    assert predict_lung_masks([dict(i, lung_region="") for i in items[:3]], bundle, tmp_path, progress=False) == 0


def test_mix_command_defaults_to_every_dataset_of_the_mix():
    from pneumonitor.cli import build_parser
    from pneumonitor.datasets.mix import DEFAULT_INCLUDE

    args = build_parser().parse_args(["datasets", "mix", "--out", "x"])
    assert tuple(args.include.split(",")) == DEFAULT_INCLUDE
    assert args.lsnet.name == "lsnet" and (args.lsnet / "configs" / "inference.json").is_file()
