"""Stage-2 datalists: the seeded half/0.8 draw, the box-label rule, ``pneumonitor proposals`` and the stage-2 bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pneumonitor.cli import main
from pneumonitor.networks import DLNet, save_bundle
from pneumonitor.stage2.proposals import SelectionSettings, boxes_only_datalist, select_for_replacement

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "dlnet" / "configs"
SIZE = 64
NET = {"backbone": "resnet18", "dense_units": [32, 16], "fpn_channels": 16, "localization_maps": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ the draw
def test_selection_threshold_is_strict_and_half_is_drawn() -> None:
    scores = [0.95, 0.8, 0.81, 0.5, 0.99, 0.85, 0.9, float("nan"), 0.7]
    eligible, chosen = select_for_replacement(scores, score_threshold=0.8, fraction=0.5, seed=0)
    np.testing.assert_array_equal(eligible, [True, False, True, False, True, True, True, False, False])
    assert chosen.sum() == 3  # floor(0.5 * 5 + 0.5)
    assert not (chosen & ~eligible).any()
    again = select_for_replacement(scores, score_threshold=0.8, fraction=0.5, seed=0)[1]
    np.testing.assert_array_equal(chosen, again)  # seeded
    draws = {tuple(select_for_replacement(scores, 0.8, 0.5, seed)[1]) for seed in range(20)}
    assert len(draws) > 1  # the seed matters
    assert select_for_replacement([0.9] * 4, 0.8, 0.5, 0)[1].sum() == 2
    assert select_for_replacement([0.9] * 4, 0.8, 1.0, 0)[1].all()
    assert not select_for_replacement([0.9] * 4, 0.8, 0.0, 0)[1].any()
    assert not select_for_replacement([0.7] * 4, 0.8, 0.5, 0)[1].any()
    assert select_for_replacement([0.7] * 4, 0.6, 0.5, 0)[1].sum() == 2  # the threshold is a parameter
    with pytest.raises(ValueError, match="fraction"):
        SelectionSettings(fraction=1.5)


def test_boxes_only_datalist_moves_masks_of_box_labelled_positives() -> None:
    datalist = {
        "name": "x",
        "training": [
            {"image": "/a.png", "label": 1, "boxes": [[1, 2, 3, 4]], "mask": "/m.png"},
            {"image": "/b.png", "label": 1, "boxes": [], "mask": ""},
            {"image": "/c.png", "label": 0, "boxes": [], "mask": ""},
        ],
        "validation": [{"image": "/d.png", "label": 1, "boxes": [[1, 2, 3, 4]], "mask": "/n.png"}],
    }
    out = boxes_only_datalist(datalist)
    first, second, third = out["training"]
    assert first["mask"] == "" and first["reference_mask"] == "/m.png" and first["localization_source"] == "boxes"
    assert second["localization_source"] == "none" and third["localization_source"] == "none"
    assert out["validation"][0]["mask"] == "/n.png" and out["validation"][0]["localization_source"] == "mask"
    assert out["name"] == "x" and datalist["training"][0]["mask"] == "/m.png"  # input untouched
    assert all(set(item) == set(first) for item in out["training"])  # same keys everywhere (MONAI collate)
    kept = boxes_only_datalist(datalist, SelectionSettings(box_labels=False))
    assert kept["training"][0]["mask"] == "/m.png" and kept["training"][0]["localization_source"] == "mask"


# ------------------------------------------------------------------------------------------------ CLI
def _dataset(root: Path, count: int = 12) -> Path:
    """``count`` 64x72 PNGs alternating negative/positive (bright rectangle, its box, and a radiologist-like mask);
    8 in training, 4 in validation. Returns the datalist path."""
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        label = index % 2
        image = rng.normal(0.3, 0.05, (SIZE, SIZE + 8))
        item = {"image": str(root / f"cxr{index:02d}.png"), "label": label, "boxes": [], "mask": "",
                "has_localization": 1}
        if label:
            x0, y0 = (int(v) for v in rng.integers(4, 30, 2))
            image[y0 + 3: y0 + 17, x0 + 3: x0 + 17] += 0.5
            item["boxes"] = [[x0, y0, x0 + 20, y0 + 20]]
            mask = np.zeros((SIZE, SIZE + 8), dtype=np.uint8)
            mask[y0 + 3: y0 + 17, x0 + 3: x0 + 17] = 255
            item["mask"] = str(root / f"mask{index:02d}.png")
            Image.fromarray(mask).save(item["mask"])
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(item["image"])
        items.append(item)
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:8], "validation": items[8:], "test": []}))
    return path


@pytest.fixture(scope="module")
def stage2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random-weight stage-1 bundle and the proposals CLI run on a tiny dataset."""
    tmp = tmp_path_factory.mktemp("stage2")
    data = tmp / "data"
    data.mkdir()
    datalist = _dataset(data)
    torch.manual_seed(0)
    checkpoint = save_bundle(DLNet(**NET), tmp / "dlnet1", [SIZE, SIZE])
    out = tmp / "stage2"
    # threshold 0 keeps whole boxes, so even random weights give a non-empty proposal; score threshold 0 makes every
    # positive eligible (random weights score about 0.5)
    code = main(["proposals", "--dlnet", str(checkpoint), "--datalist", str(datalist), "--out", str(out),
                 "--score-threshold", "0", "--threshold", "0", "--seed", "3", "--quiet"])
    assert code == 0
    return {"data": data, "datalist": datalist, "checkpoint": checkpoint, "out": out}


def test_cli_replaces_half_of_the_training_positives(stage2: dict[str, Path]) -> None:
    source = json.loads(stage2["datalist"].read_text())
    new = json.loads((stage2["out"] / "datalist.json").read_text())
    summary = json.loads((stage2["out"] / "summary.json").read_text())
    replaced = [item for item in new["training"] if item["localization_source"] == "proposal"]
    assert len(replaced) == 2  # 4 training positives, all eligible, half drawn
    assert summary["counts"] == {"replaced": 2, "not_drawn": 2, "negative": 4, "split_not_processed": 4}
    assert summary["selection"]["seed"] == 3 and summary["gradcam"]["threshold"] == 0.0
    for before, after in zip(source["training"], new["training"]):
        assert after["image"] == before["image"] and after["label"] == before["label"]
        assert after["boxes"] == before["boxes"]
        if before["label"] == 1:
            assert after["reference_mask"] == before["mask"]  # boxes are the label: the input mask is kept aside
            if after["localization_source"] == "boxes":
                assert after["mask"] == ""
    for item in replaced:
        mask = np.asarray(Image.open(item["mask"]))
        assert Path(item["mask"]).parent == (stage2["out"] / "masks").resolve()
        assert mask.shape == (SIZE, SIZE + 8) and mask.dtype == np.uint8
        x0, y0, x1, y1 = item["boxes"][0]
        inside = np.zeros(mask.shape, dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert not mask[~inside].any() and (mask[inside] > 127).all()
    assert new["validation"][0]["mask"] == source["validation"][0]["mask"] or source["validation"][0]["mask"] == ""
    assert [i["mask"] for i in new["validation"]] == [i["mask"] for i in source["validation"]]
    assert sorted(p.name for p in (stage2["out"] / "masks").iterdir()) == sorted(
        Path(i["mask"]).name for i in replaced
    )
    assert (stage2["out"] / "preview.png").stat().st_size > 0
    # same seed, same draw
    again = stage2["out"].parent / "again"
    assert main(["proposals", "--dlnet", str(stage2["checkpoint"]), "--datalist", str(stage2["datalist"]),
                 "--out", str(again), "--score-threshold", "0", "--threshold", "0", "--seed", "3", "--quiet"]) == 0
    redo = json.loads((again / "datalist.json").read_text())
    assert [i["localization_source"] for i in redo["training"]] == [i["localization_source"] for i in new["training"]]


def test_cli_score_threshold_and_unreadable_images(tmp_path: Path, stage2: dict[str, Path]) -> None:
    source = json.loads(stage2["datalist"].read_text())
    source["training"][1]["image"] = str(tmp_path / "missing.png")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(source))
    out = tmp_path / "out"
    # nothing scores above 0.99 with random weights: nobody is replaced, and the summary says why
    assert main(["proposals", "--dlnet", str(stage2["checkpoint"]), "--datalist", str(datalist), "--out", str(out),
                 "--score-threshold", "0.99", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"low_score": 3, "unreadable": 1, "negative": 4, "split_not_processed": 4}
    rows = {row["image"]: row for row in summary["items"]}
    assert rows[str(tmp_path / "missing.png")]["outcome"] == "unreadable"
    assert all(0.0 <= r["probability"] <= 1.0 for r in summary["items"] if r["outcome"] == "low_score")
    assert not list((out / "masks").iterdir()) and not (out / "preview.png").exists()


def test_cli_errors_are_clear(tmp_path: Path, stage2: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["proposals", "--datalist", str(stage2["datalist"]), "--out", str(tmp_path / "a")]) == 2
    assert "--dlnet is required" in capsys.readouterr().err
    assert main(["proposals", "--dlnet", str(tmp_path / "none.pt"), "--datalist", str(stage2["datalist"]),
                 "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["proposals", "--dlnet", str(stage2["checkpoint"]), "--datalist", str(stage2["datalist"]),
                 "--out", str(tmp_path / "c"), "--splits", "train"]) == 2
    assert "no split" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["proposals", "--boxes-only", "--datalist", str(stage2["datalist"]), "--out", str(tmp_path / "d")]) == 0
    boxes_only = json.loads((tmp_path / "d" / "datalist.json").read_text())
    assert {i["localization_source"] for i in boxes_only["training"]} == {"boxes", "none"}


# ------------------------------------------------------------------------------------------------ bundle
def _override_args() -> list[str]:
    overrides = {"image_size": [SIZE, SIZE], "network_def#backbone": NET["backbone"],
                 "network_def#dense_units": NET["dense_units"], "network_def#fpn_channels": NET["fpn_channels"],
                 "network_def#localization_maps": NET["localization_maps"], "num_workers": 0, "batch_size": 4}
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def test_stage2_config_trains_one_epoch(tmp_path: Path, stage2: dict[str, Path]) -> None:
    """``python -m monai.bundle run training`` with train.json + train_stage2.json on the proposals datalist."""
    if not (CONFIGS / "train.json").is_file():
        pytest.skip("bundles/dlnet/configs/train.json is not there yet")
    bundle = tmp_path / "bundle"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
         json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "train_stage2.json")]),
         "--bundle_root", str(bundle), "--dataset_dir", str(stage2["out"]), "--max_epochs", "1", *_override_args()],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    weights = bundle / "models" / "stage2" / "model.pt"
    assert weights.is_file() and not (bundle / "models" / "model.pt").exists()  # DLNet-1's slot is untouched


def test_stage2_config_can_start_from_the_stage1_weights(stage2: dict[str, Path]) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "train_stage2.json")])
    assert parser.get_parsed_content("stage") == 2 and parser["max_epochs"] == 30  # same epochs as stage 1
    assert parser.get_parsed_content("learning_rate") == pytest.approx(1e-4)
    # train.json's init_weights: the run's own architecture (here the stage-1 test network's) from its weights
    from pneumonitor.networks.bundle import read_inference_config

    parser["network_def"] = read_inference_config(stage2["checkpoint"])["network_def"]
    parser["init_weights"] = str(stage2["checkpoint"])
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network")
    stored = torch.load(stage2["checkpoint"] / "models" / "model.pt", weights_only=True)
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(tensor, stored[name])
    assert network.training


# ------------------------------------------------------------------------------------------------ measurement
def test_measurement_script_writes_the_table(tmp_path: Path, stage2: dict[str, Path]) -> None:
    """The stage-2 measurement (``scripts/stage2_measure.py`` calls it) end to end with tiny checkpoints (real numbers
    need trained weights)."""
    from pneumonitor.stage2 import measure as module

    torch.manual_seed(1)
    dlnet2 = save_bundle(DLNet(**NET), tmp_path / "dlnet2", [SIZE, SIZE])
    out = tmp_path / "measure"
    assert module.main(["--datalist", str(stage2["out"] / "datalist.json"), "--dlnet1", str(stage2["checkpoint"]),
                        "--dlnet2", str(dlnet2), "--split", "training", "--out", str(out), "--quiet"]) == 0
    table = json.loads((out / "table.json").read_text())["table"]
    assert list(table) == ["box", "stage1_heatmap", "proposal", "stage2_heatmap"]
    assert all(stats["n"] == 4 for stats in table.values())  # the 4 training positives (reference_mask)
    # the boxes are 20x20 around a 14x14 reference square: Dice = 2*196 / (400 + 196)
    assert table["box"]["dice_mean"] == pytest.approx(2 * 196 / 596, abs=1e-3)
    assert (out / "examples.png").stat().st_size > 0 and "| (a) box mask |" in (out / "table.md").read_text()
    rows = (out / "measurements.csv").read_text().splitlines()
    assert rows[0] == "image,method,dice,iou,area_fraction_of_reference" and len(rows) == 1 + 4 * 4
    assert module.main(["--datalist", str(stage2["datalist"]), "--dlnet1", str(stage2["checkpoint"]),
                        "--split", "test", "--out", str(tmp_path / "none"), "--quiet"]) == 2
