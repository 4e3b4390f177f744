"""Shared converter helpers: patient-level splits, boxes from masks, datalist writing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumonitor.datasets.bounding_boxes import boxes_from_mask, boxes_to_mask
from pneumonitor.datasets.datalist import format_summary_table, summarize, write_conversion
from pneumonitor.datasets.splits import assign_splits, split_patients


def test_split_is_patient_level_stratified_and_seeded():
    items = [{"patient_id": f"p{p}", "label": int(p < 30), "image": f"/x/{p}_{k}.png"} for p in range(100) for k in range(p % 3 + 1)]
    assign_splits(items, fractions=(0.7, 0.15, 0.15), seed=4)
    by_patient: dict[str, set] = {}
    for item in items:
        by_patient.setdefault(item["patient_id"], set()).add(item["split"])
    assert all(len(splits) == 1 for splits in by_patient.values())
    patient_split = {pid: next(iter(s)) for pid, s in by_patient.items()}
    positives = Counter(patient_split[f"p{p}"] for p in range(30))
    assert positives == {"training": 22, "validation": 4, "test": 4}  # round(30 * 0.15) = 4 (half to even)
    again = split_patients({f"p{p}": int(p < 30) for p in reversed(range(100))}, (0.7, 0.15, 0.15), seed=4)
    assert again == patient_split  # input order does not matter
    assert split_patients({f"p{p}": int(p < 30) for p in range(100)}, (0.7, 0.15, 0.15), seed=5) != patient_split
    with pytest.raises(ValueError):
        split_patients({"a": 0}, (0.5, 0.5, 0.5))


def test_boxes_merge_close_regions_and_stay_tight():
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[10:20, 10:20] = 255
    mask[10:20, 23:30] = 255  # 3 px gap: merged with radius 5
    mask[40:50, 60:70] = 255  # far away: its own box
    mask[0, 79] = 255  # a 1-pixel speck at the border
    assert boxes_from_mask(mask, closing_radius=5) == [[79, 0, 80, 1], [10, 10, 30, 20], [60, 40, 70, 50]]
    assert boxes_from_mask(mask, closing_radius=5, min_area=2) == [[10, 10, 30, 20], [60, 40, 70, 50]]
    assert boxes_from_mask(mask, closing_radius=0, min_area=2) == [[10, 10, 20, 20], [23, 10, 30, 20], [60, 40, 70, 50]]
    assert boxes_from_mask(np.zeros((5, 5))) == []
    # boxes -> mask -> boxes round trip
    boxes = [[3, 4, 9, 12], [20, 20, 25, 30]]
    assert boxes_from_mask(boxes_to_mask(boxes, (40, 40)), closing_radius=0) == boxes


def test_region_touching_the_border_keeps_its_extent():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:10, 0:4] = True
    assert boxes_from_mask(mask, closing_radius=5) == [[0, 0, 4, 10]]


def test_write_conversion_outputs(tmp_path: Path):
    items = [{"image": "/a.png", "label": 1, "patient_id": "1", "source": "s", "split": "training"},
             {"image": "/b.png", "label": 0, "patient_id": "2", "source": "s", "split": "test"}]
    lsnet = [{"image": "/a.png", "label": "/a_mask.png", "patient_id": "1", "source": "s", "split": "training"}]
    summary = write_conversion(tmp_path, items, lsnet, [{"image": "/c.png", "reason": "lateral"}], {"seed": 1})
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert datalist["seed"] == 1 and datalist["validation"] == [] and "split" not in datalist["training"][0]
    assert json.loads((tmp_path / "lsnet_datalist.json").read_text())["training"][0]["label"] == "/a_mask.png"
    assert summary["datalist"]["training"]["labels"] == {"1": 1} and summary["excluded_reasons"] == {"lateral": 1}
    assert not list(tmp_path.glob(".*tmp"))
    table = format_summary_table(summarize(datalist))
    assert "training" in table and "test" in table
