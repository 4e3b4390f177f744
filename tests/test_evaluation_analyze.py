"""``pneumonitor evaluate`` on the real output of ``pneumonitor analyze`` (the results.csv contract), in-process.

The checkpoints have random weights except for biases that make the outputs known: LSNet says "lung" everywhere and
DLNet says "pneumonia" with probability ~1 and a constant heatmap of 0.9 (so every lung pixel is pneumonia, 8/8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumonitor.cli import main
from pneumonitor.datasets.datalist import write_conversion
from pneumonitor.publishing import write_png
from pneumonitor.networks import DLNet, LSNet, save_bundle


def known_output_checkpoints(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(10.0)
        dl.localization_head.output_conv.weight.zero_()
        dl.localization_head.output_conv.bias.fill_(0.9)
    ls = LSNet(width=0.125)
    with torch.no_grad():
        ls.head.weight.zero_()
        ls.head.bias.fill_(10.0)
    return save_bundle(dl, folder / "dl", [128, 128]), save_bundle(ls, folder / "ls", [128, 128])


def test_evaluate_reads_analyze_output(tmp_path: Path):
    dl, ls = known_output_checkpoints(tmp_path)
    shape = (64, 80)
    items = []
    for index, label in enumerate((1, 0)):
        ramp = np.tile(np.linspace(0, 255, shape[1], dtype=np.float32), (shape[0], 1)).astype(np.uint8)
        image = write_png(tmp_path / "images" / f"cxr{index}.png", ramp)
        lungs = write_png(tmp_path / "ref" / f"lungs{index}.png", np.full(shape, 255, np.uint8))
        items.append({"image": str(image), "label": label, "lung_mask": str(lungs), "severity": 8.0,
                      "boxes": [[0, 0, shape[1], shape[0]]] if label else [], "patient_id": str(index),
                      "source": "synthetic", "split": "test"})
    write_conversion(tmp_path / "reference", items)
    results = tmp_path / "analysis"
    # synthetic ramps are no radiographs: the QC gate (tested in test_qc.py) would refuse them
    assert main(["analyze", str(tmp_path / "images"), "--out", str(results), "--dlnet", str(dl), "--lsnet", str(ls),
                 "--no-progress", "--qc", "off"]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--results", str(results), "--reference", str(tmp_path / "reference" / "datalist.json"),
                 "--out", str(out), "--n-bootstrap", "50", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["datasets"][0]
    assert metrics["matched"] == 2 and metrics["unmatched_reference"] == 0
    assert metrics["classification"]["auc"]["value"] == pytest.approx(0.5)  # both called pneumonia with p ~ 1
    assert metrics["lung_segmentation"]["dice"]["mean"] == pytest.approx(1.0)
    severity = metrics["severity"]["total"]
    assert severity["n"] == 2 and severity["mae"] == pytest.approx(0.0)
    loc = metrics["localization"]
    # one whole-image region at every threshold up to 0.9: a hit on the positive, a false positive on the negative
    assert loc["images"] == 2 and loc["sweep"]["map"][0] == pytest.approx(0.5)
