"""The DLNet MONAI bundle, in the model zoo's style: train, check properties, evaluate, infer, verify, export.

A tiny synthetic dataset (64x64 PNGs: positives carry a bright rectangle and its box) is written to a temp dir; the
bundle's configs are copied into a temp bundle so that nothing is written into the repository. The network is
shrunk through overrides (ResNet-18, narrow heads) so that the whole file runs in about a minute on 2 cores.
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
BUNDLE = REPO / "bundles" / "dlnet"
SIZE = 64
NET = {"backbone": "resnet18", "dense_units": [32, 16], "fpn_channels": 16, "localization_maps": 8}
OVERRIDES = {
    "image_size": [SIZE, SIZE],
    "network_def#backbone": NET["backbone"],
    "network_def#dense_units": NET["dense_units"],
    "network_def#fpn_channels": NET["fpn_channels"],
    "network_def#localization_maps": NET["localization_maps"],
    "num_workers": 0,
    "batch_size": 4,
}
#: the network the tests train (train.json's DLNet with NET): what inference.json must describe to serve it (the
#: shipped inference.json describes the shipped ensemble, so its network_def is replaced, not patched)
TRAINED_NET_DEF = {**json.loads((BUNDLE / "configs" / "train.json").read_text())["network_def"], **NET}
INFER_OVERRIDES = {"image_size": [SIZE, SIZE], "network_def": TRAINED_NET_DEF}


def _write_dataset(root: Path, count: int = 16) -> None:
    """``count`` images alternating negative/positive; positives: a bright rectangle and its box."""
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        label = index % 2
        image = rng.normal(0.3, 0.05, (SIZE, SIZE + 8))  # not square: boxes refer to the stored size
        boxes = []
        if label:
            x0, y0 = (int(v) for v in rng.integers(4, 30, 2))
            w, h = (int(v) for v in rng.integers(14, 26, 2))
            image[y0 : y0 + h, x0 : x0 + w] += 0.5
            boxes = [[x0, y0, x0 + w, y0 + h]]
        path = root / f"cxr{index:02d}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
        items.append({"image": path.name, "label": label, "boxes": boxes, "mask": "", "has_localization": 1})
    datalist = {"training": items[:10], "validation": items[10:], "test": items[10:]}
    (root / "datalist.json").write_text(json.dumps(datalist))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundle copy + dataset, trained 2 epochs through ``ConfigWorkflow``."""
    from monai.bundle import ConfigWorkflow

    tmp = tmp_path_factory.mktemp("dlnet")
    bundle = tmp / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    data = tmp / "data"
    data.mkdir()
    _write_dataset(data)
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        workflow_type="train",
        bundle_root=str(bundle),
        dataset_dir=str(data),
        max_epochs=2,
        **OVERRIDES,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])  # nothing required is missing
    workflow.run()
    workflow.finalize()
    return {"bundle": bundle, "data": data}


def test_train_writes_best_checkpoint(trained: dict[str, Path]) -> None:
    weights = trained["bundle"] / "models" / "model.pt"
    assert weights.is_file()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    assert "localization_head.output_conv.weight" in state
    assert state["localization_head.output_conv.weight"].shape[0] == NET["localization_maps"]


def test_properties_of_the_train_config(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(trained["bundle"] / "configs" / "train.json"), workflow_type="train",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), **OVERRIDES,
    )
    workflow.initialize()
    for name in ("bundle_root", "device", "dataset_dir", "network_def", "trainer", "max_epochs", "train_dataset",
                 "train_handlers", "evaluator", "val_interval", "val_dataset", "val_handlers"):
        assert getattr(workflow, name) is not None, name
    assert workflow.max_epochs == 30  # the paper's default stays in the config
    assert len(workflow.train_dataset_data) == 10 and len(workflow.val_dataset_data) == 6


def test_evaluate_writes_auc_operating_point_and_sweep(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    configs = trained["bundle"] / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], workflow_type="train",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), **OVERRIDES,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = dict(csv.reader((trained["bundle"] / "eval" / "metrics.csv").open()))
    expected = {"val_auc", "val_loss", "sensitivity", "specificity", "accuracy", "ppv", "roc_threshold"}
    expected |= {f"heatmap_map_{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    assert expected <= set(rows)
    for name in ("val_auc", "sensitivity", "specificity", "accuracy"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    probabilities = list(csv.reader((trained["bundle"] / "eval" / "probabilities.csv").open()))
    assert len(probabilities) == 6


def test_inference_writes_probabilities_and_heatmaps(trained: dict[str, Path]) -> None:
    from monai.bundle import ConfigWorkflow

    out = trained["bundle"] / "infer"
    workflow = ConfigWorkflow(
        config_file=str(trained["bundle"] / "configs" / "inference.json"), workflow_type="infer",
        bundle_root=str(trained["bundle"]), dataset_dir=str(trained["data"]), output_dir=str(out),
        **INFER_OVERRIDES,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    rows = list(csv.reader((out / "predictions.csv").open()))
    assert len(rows) == 16
    assert all(0.0 <= float(row[1]) <= 1.0 for row in rows)
    heatmap = np.asarray(Image.open(out / "cxr01_heatmap.png"))
    assert heatmap.shape == (SIZE, SIZE + 8) and heatmap.dtype == np.uint8  # the stored image's size


def _use_test_network(bundle: Path) -> None:
    """Write the test architecture and size into the bundle copy's inference.json (what a user does after
    training a non-default architecture), so that tools reading only the file see the right network."""
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["network_def"] = TRAINED_NET_DEF
    config["image_size"] = [SIZE, SIZE]
    path.write_text(json.dumps(config, indent=4))


def test_pipeline_loader_reads_the_bundle(trained: dict[str, Path]) -> None:
    from pneumonitor.networks import DLNet, load_bundle

    _use_test_network(trained["bundle"])
    loaded = load_bundle(trained["bundle"], kind="DLNet")
    assert isinstance(loaded.network, DLNet)
    assert loaded.image_size == (SIZE, SIZE)


def test_verify_net_in_out_and_torchscript_export(trained: dict[str, Path]) -> None:
    from monai.bundle import ckpt_export, verify_net_in_out

    configs = trained["bundle"] / "configs"
    _use_test_network(trained["bundle"])
    verify_net_in_out(net_id="network_pred", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), device="cpu", n=2)
    # the maps, against their channel count (verify_net_in_out only reads the "pred" output entry)
    verify_net_in_out(net_id="network_maps", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), device="cpu", n=2,
                      **{"_meta_#network_data_format#outputs#pred#num_channels": NET["localization_maps"]})
    exported = trained["bundle"] / "models" / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(exported), ckpt_file=str(trained["bundle"] / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
    )
    scripted = torch.jit.load(str(exported))
    from pneumonitor.networks import load_bundle

    eager = load_bundle(trained["bundle"], kind="DLNet").network
    x = torch.rand(2, 3, SIZE, SIZE)
    logits, maps = scripted(x)
    expected_logits, expected_maps = eager(x)
    assert logits.shape == (2, 1) and maps.shape == (2, NET["localization_maps"], SIZE // 8, SIZE // 8)
    assert torch.allclose(logits, expected_logits, atol=1e-5) and torch.allclose(maps, expected_maps, atol=1e-5)


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _override_args() -> list[str]:
    args = []
    for key, value in OVERRIDES.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def test_command_line_run_training(tmp_path: Path, trained: dict[str, Path]) -> None:
    """The command users type: ``python -m monai.bundle run training --config_file ...``."""
    bundle = tmp_path / "bundle"
    result = _cli(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
         str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(bundle), "--dataset_dir", str(trained["data"]),
         "--max_epochs", "1", *_override_args()],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file()
    # a killed run resumes: the per-epoch state is there, and a second call runs only the epochs left
    resume = bundle / "models" / "resume.pt"
    state = torch.load(resume, map_location="cpu", weights_only=False)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "best_model_saver"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]  # one epoch done
    again = _cli(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
         str(BUNDLE / "configs" / "train.json"), "--bundle_root", str(bundle), "--dataset_dir", str(trained["data"]),
         "--max_epochs", "2", *_override_args()],
        cwd=REPO,
    )
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert "resuming from" in log and "Epoch: 2/2" in log and "Epoch: 1/2" not in log
    trainer = torch.load(resume, map_location="cpu", weights_only=False)["trainer"]
    assert trainer["iteration"] == 2 * trainer["epoch_length"]


def test_multi_gpu_config_with_two_cpu_processes(tmp_path: Path, trained: dict[str, Path]) -> None:
    """``multi_gpu_train.json`` under torchrun with 2 processes on CPU (gloo); only rank 0 saves."""
    bundle = tmp_path / "bundle"
    configs = BUNDLE / "configs"
    result = _cli(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
         "-m", "monai.bundle", "run", "training",
         "--config_file", json.dumps([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
         "--bundle_root", str(bundle), "--dataset_dir", str(trained["data"]), "--max_epochs", "1",
         *_override_args()],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file()
