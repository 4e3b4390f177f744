"""The LSNet MONAI bundle, in the model zoo's style: train (with LSNet-Aug), check properties, evaluate, infer,
verify, export.

Tiny synthetic radiographs (64x64: two dark elliptic lungs on a bright body, masks 0/255 with a few V7-style 127
"ignore" pixels) are written to a temp dir; the bundle's configs are copied into a temp bundle. LSNet is shrunk to
width 0.125 through an override.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lsnet"
SIZE = 64
OVERRIDES = {"image_size": [SIZE, SIZE], "network_def#width": 0.125, "num_workers": 0, "batch_size": 4}


def _write_dataset(root: Path, count: int = 12) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0 : SIZE + 16]
    items = []
    for index in range(count):
        cy, c1, c2 = 32 + rng.integers(-3, 4), 24 + rng.integers(-3, 4), 56 + rng.integers(-3, 4)
        lungs = (((yy - cy) / 18) ** 2 + ((xx - c1) / 9) ** 2 < 1) | (((yy - cy) / 18) ** 2 + ((xx - c2) / 9) ** 2 < 1)
        image = np.where(lungs, 0.2, 0.7) + rng.normal(0, 0.05, lungs.shape)
        mask = np.where(lungs, 255, 0).astype(np.uint8)
        if index % 3 == 0:
            mask[cy - 2 : cy + 2, c1 - 2 : c1 + 2] = 127  # V7 "ignore" pixels
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / f"cxr{index:02d}.png")
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"cxr{index:02d}.png")
        items.append({"image": f"cxr{index:02d}.png", "label": f"masks/cxr{index:02d}.png", "ignore_value": 127})
    datalist = {"training": items[:8], "validation": items[8:], "test": items[8:]}
    (root / "lsnet_datalist.json").write_text(json.dumps(datalist))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from monai.bundle import ConfigWorkflow

    tmp = tmp_path_factory.mktemp("lsnet")
    bundle = tmp / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    data = tmp / "data"
    data.mkdir()
    _write_dataset(data)
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"), workflow_type="train", bundle_root=str(bundle),
        dataset_dir=str(data), max_epochs=2, **OVERRIDES,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    return {"bundle": bundle, "data": data}


def test_train_writes_best_checkpoint_and_properties(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    state = torch.load(trained["bundle"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    assert state["encoder.0.0.weight"].shape[0] == 8  # width 0.125 of VGG's 64
    workflow = ConfigWorkflow(
        config_file=str(trained["bundle"] / "configs" / "train.json"), workflow_type="train",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), **OVERRIDES,
    )
    workflow.initialize()
    for name in ("bundle_root", "device", "dataset_dir", "network_def", "trainer", "max_epochs", "train_dataset",
                 "train_handlers", "evaluator", "val_interval", "val_dataset", "val_handlers", "val_key_metric"):
        assert getattr(workflow, name) is not None, name
    # the seven LSNet-Aug transforms, each with its probability, are in the training chain
    names = [type(t).__name__ for t in workflow.train_dataset.transform.transforms]
    for expected in ("RandLungOpacityd", "RandBlobImplantd", "RandAdjustContrastd", "RandZoomd", "RandAffined",
                     "RandRotated", "RandFlipd"):
        assert expected in names, expected
    assert all(0 < t.prob <= 1 for t in workflow.train_dataset.transform.transforms if hasattr(t, "prob"))


def test_evaluate_writes_dice_and_jaccard_mean_and_sd(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    configs = trained["bundle"] / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], workflow_type="train",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), **OVERRIDES,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    eval_dir = trained["bundle"] / "eval"
    for metric in ("val_mean_dice", "val_mean_iou"):
        rows = list(csv.DictReader((eval_dir / f"{metric}_summary.csv").open()))
        summary = {row["class"]: row for row in rows}
        assert 0.0 <= float(summary["mean"]["mean"]) <= 1.0
        assert float(summary["mean"]["std"]) >= 0.0
        assert float(summary["mean"]["notnans"]) == 4.0  # the 4 test images


def test_inference_writes_lung_masks_at_the_stored_size(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    out = trained["bundle"] / "infer"
    workflow = ConfigWorkflow(
        config_file=str(trained["bundle"] / "configs" / "inference.json"), workflow_type="infer",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), output_dir=str(out),
        image_size=[SIZE, SIZE], **{"network_def#width": 0.125},
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    masks = sorted(out.glob("*_lungs.png"))
    assert len(masks) == 12
    mask = np.asarray(Image.open(masks[0]))
    assert mask.shape == (SIZE, SIZE + 16) and set(np.unique(mask)) <= {0, 255}


def test_verify_export_and_pipeline_loader(trained: dict[str, Path]) -> None:
    from monai.bundle import ckpt_export, verify_net_in_out

    from pneumonitor.networks import LSNet, load_bundle

    configs = trained["bundle"] / "configs"
    inference = json.loads((configs / "inference.json").read_text())
    inference["network_def"]["width"] = 0.125
    inference["image_size"] = [SIZE, SIZE]
    (configs / "inference.json").write_text(json.dumps(inference, indent=4))
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), device="cpu", n=4)
    exported = trained["bundle"] / "models" / "model.ts"
    # LSNet.forward iterates reversed lists of skips, which TorchScript cannot script: the bundle exports by tracing
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(trained["bundle"] / "models" / "model.pt"),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                use_trace=True, input_shape=[1, 1, SIZE, SIZE])
    loaded = load_bundle(trained["bundle"], kind="LSNet")
    assert isinstance(loaded.network, LSNet) and loaded.image_size == (SIZE, SIZE)
    traced = torch.jit.load(str(exported))
    for shape in ((1, 1, SIZE, SIZE), (2, 1, 2 * SIZE, SIZE)):  # the trace is not tied to the traced shape
        x = torch.rand(*shape)
        assert torch.allclose(traced(x), loaded.network(x), atol=1e-4)


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _override_args() -> list[str]:
    return [a for k, v in OVERRIDES.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


def test_command_line_run_training(tmp_path: Path, trained: dict[str, Path]) -> None:
    bundle = tmp_path / "bundle"
    result = _cli([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                   str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(bundle), "--dataset_dir",
                   str(trained["data"]), "--max_epochs", "1", *_override_args()])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file()
    # a killed run resumes (as DLNet's): the per-epoch state is there, and a second call runs only the epochs left
    resume = bundle / "models" / "resume.pt"
    state = torch.load(resume, map_location="cpu", weights_only=False)
    assert {"network", "optimizer", "trainer", "best_model_saver"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]  # one epoch done
    again = _cli([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                  str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(bundle), "--dataset_dir",
                  str(trained["data"]), "--max_epochs", "2", *_override_args()])
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert "resuming from" in log and "Epoch: 2/2" in log and "Epoch: 1/2" not in log
    trainer = torch.load(resume, map_location="cpu", weights_only=False)["trainer"]
    assert trainer["iteration"] == 2 * trainer["epoch_length"]


def test_multi_gpu_config_with_two_cpu_processes(tmp_path: Path, trained: dict[str, Path]) -> None:
    bundle = tmp_path / "bundle"
    configs = BUNDLE / "configs"
    result = _cli([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
                   "-m", "monai.bundle", "run", "training", "--config_file",
                   json.dumps([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
                   "--bundle_root", str(bundle), "--dataset_dir", str(trained["data"]), "--max_epochs", "1",
                   *_override_args()])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file()


def test_training_can_start_from_a_bundles_weights(tmp_path: Path):
    """train.json's init_weights (as DLNet's): the run's LSNet starts from a bundle's weights, loaded strictly."""
    from monai.bundle import ConfigParser

    from pneumonitor.networks import LSNet, save_bundle

    torch.manual_seed(3)
    bundle = save_bundle(LSNet(width=0.125), tmp_path / "lsnet", [64, 64])
    parser = ConfigParser()
    parser.read_config([str(Path(__file__).resolve().parents[1] / "bundles" / "lsnet" / "configs" / "train.json")])
    parser["network_def"] = {"_target_": "pneumonitor.networks.LSNet", "width": 0.125}
    parser["device"] = "$torch.device('cpu')"
    parser["init_weights"] = str(bundle)
    stored = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for name, value in parser.get_parsed_content("network").state_dict().items():
        assert torch.equal(value, stored[name]), name
