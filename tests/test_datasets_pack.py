"""Training packs: the DLNet bundle's loading stage stored once (``pneumonitor datasets pack``), read back by
``LoadPackedd`` through ``configs/train_packed.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from pneumonitor.cli import main
from pneumonitor.datasets import LoadPackedd, pack_datalist, write_training_pack

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "dlnet" / "configs"
TRAIN = CONFIGS / "train.json"


def _png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    """Six items: large and small radiographs, boxes, a radiologist mask, lung regions, an expert extent, and one
    unreadable image."""
    folder = tmp_path_factory.mktemp("packdata")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:600, 0:520]
    large = (120 + 80 * np.sin(xx / 40.0) * np.cos(yy / 55.0) + rng.normal(0, 12, xx.shape)).clip(0, 255)
    small = (100 + 60 * np.cos(np.mgrid[0:224, 0:224][1] / 20.0)).clip(0, 255)
    lungs = np.zeros((600, 520), np.uint8)
    lungs[100:500, 60:240] = 255
    lungs[100:500, 280:460] = 255
    mask = np.zeros((600, 520), np.uint8)
    mask[250:420, 300:430] = 255
    small_lungs = np.zeros((224, 224), np.uint8)
    small_lungs[40:190, 20:100] = 255
    (folder / "broken.png").write_bytes(b"not a png")
    base = {"boxes": [], "mask": "", "lung_region": "", "extent": -1.0, "has_localization": 0, "patient_id": "p",
            "source": "synthetic", "view": "PA"}
    items = [
        {**base, "image": _png(folder / "a.png", large.astype(np.uint8)), "label": 1,
         "boxes": [[80, 120, 200, 300]], "has_localization": 1, "lung_region": _png(folder / "a_lungs.png", lungs)},
        {**base, "image": _png(folder / "b.png", large[::-1].astype(np.uint8)), "label": 1, "has_localization": 1,
         "mask": _png(folder / "b_mask.png", mask), "lung_region": _png(folder / "b_lungs.png", lungs), "extent": 3.0},
        {**base, "image": _png(folder / "c.png", small.astype(np.uint8)), "label": 0, "has_localization": 1,
         "lung_region": _png(folder / "c_lungs.png", small_lungs)},
        {**base, "image": _png(folder / "d.png", large[:, ::-1].astype(np.uint8)), "label": 1, "extent": 6.0,
         "lung_region": _png(folder / "d_lungs.png", lungs)},
        {**base, "image": str(folder / "broken.png"), "label": 0},
    ]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items[:3] + items[4:], "validation": items[3:4], "test": []}))
    return path


def _stage(config_files: list[Path], dataset_dir: Path) -> Compose:
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser["dataset_dir"] = str(dataset_dir)
    return Compose(parser.get_parsed_content("load"))


@pytest.fixture(scope="module")
def pack(datalist: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    summary = write_training_pack(datalist, out, TRAIN, quality=90, progress=False)
    assert summary["counts"] == {"training": 3, "validation": 1}
    assert [e["image"].endswith("broken.png") for e in summary["left_out"]] == [True]
    return out


def test_pack_reproduces_the_loading_stage(datalist: Path, pack: Path):
    stage = _stage([TRAIN], datalist.parent)
    reader = LoadPackedd(pack, image_size=(448, 448), map_size=(56, 56))
    items = pack_datalist(pack, "training") + pack_datalist(pack, "validation")
    assert [i["pack_index"] for i in items] == [0, 1, 2, 3]
    for item in items:
        expected, packed = stage(dict(item)), reader(item)
        assert packed["image"].shape == expected["image"].shape == (1, 448, 448)
        # 8-bit WebP at quality 90: the codec's error, far below the gamma/noise augmentation's changes
        assert float((packed["image"] - expected["image"]).abs().mean()) < 0.01
        for key in ("target", "lung", "region"):
            torch.testing.assert_close(packed[key], expected[key].float(), atol=1 / 255 + 1e-6, rtol=0)
        for key in ("has_target", "has_lung", "extent"):
            assert float(packed[key]) == float(expected[key]), key
        assert packed["label"] == expected["label"]
    # the box and the mask became targets, the image without location has none
    assert [float(reader(i)["target"].sum()) > 0 for i in items] == [True, True, False, False]


def test_lossless_pack_is_exact_to_8_bits(datalist: Path, tmp_path: Path):
    write_training_pack(datalist, tmp_path, TRAIN, splits=("validation",), quality=None, progress=False)
    item = pack_datalist(tmp_path, "validation")[0]
    expected = _stage([TRAIN], datalist.parent)(dict(item))
    packed = LoadPackedd(tmp_path, 448, 56)(item)
    assert float((packed["image"] - expected["image"]).abs().max()) <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="no 'training' split"):
        pack_datalist(tmp_path, "training")


def test_a_448_pack_serves_224_training(datalist: Path, pack: Path):
    stage = _stage([TRAIN, CONFIGS / "train_cpu.json"], datalist.parent)
    reader = LoadPackedd(pack, image_size=(224, 224), map_size=(28, 28))
    for item in pack_datalist(pack, "training"):
        expected, packed = stage(dict(item)), reader(item)
        assert packed["image"].shape == (1, 224, 224) and packed["target"].shape == (1, 28, 28)
        assert float((packed["target"] - expected["target"]).abs().max()) < 0.1
        assert float((packed["lung"] - expected["lung"]).abs().mean()) < 0.01
        torch.testing.assert_close(packed["region"], (packed["target"] >= 0.5).float())
    with pytest.raises(ValueError, match="does not divide"):
        LoadPackedd(pack, image_size=(320, 320), map_size=(40, 40))


def test_train_packed_config_feeds_the_bundle_training_chain(pack: Path):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in ("train.json", "train_cpu.json", "train_packed.json")])
    parser["pack_dir"] = str(pack)
    items = parser.get_parsed_content("train_datalist")
    assert len(items) == 3 and len(parser.get_parsed_content("val_datalist")) == 1
    out = parser.get_parsed_content("train#preprocessing")(dict(items[0]))
    assert set(out) == set(parser.get_parsed_content("keep_keys"))
    assert out["image"].shape == (3, 224, 224) and out["target"].shape == (1, 28, 28)
    assert len(parser.get_parsed_content("sample_weights")) == 3


def test_cli_pack_reports_bad_input_and_writes_nothing(datalist: Path, tmp_path: Path):
    assert main(["datasets", "pack", "--datalist", str(tmp_path / "missing.json"), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 2
    broken = tmp_path / "broken.json"
    items = json.loads(datalist.read_text())["training"]
    broken.write_text(json.dumps({"training": [i for i in items if i["image"].endswith("broken.png")]}))
    assert main(["datasets", "pack", "--datalist", str(broken), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert not (tmp_path / "p").exists()
    assert main(["datasets", "pack", "--datalist", str(datalist), "--out", str(tmp_path / "p"), "--quality", "101",
                 "--quiet"]) == 2
    assert main(["datasets", "pack", "--datalist", str(datalist), "--out", str(tmp_path / "ok"),
                 "--splits", "validation", "--quiet"]) == 0
    assert json.loads((tmp_path / "ok" / "pack.json").read_text())["counts"] == {"validation": 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_validation_loss_with_outputs_on_the_gpu():
    """A decollated evaluator item carries its 0-d targets as CPU numbers while the outputs are on the GPU (the
    first GPU run of the paper configuration failed here)."""
    from pneumonitor.engines import DLNetOutputd
    from pneumonitor.networks.losses import DLNetLoss

    loss = DLNetLoss(localization_weight=4.0, outside_lung_weight=4.0, extent_weight=4.0)
    item = {"pred": [torch.zeros(1, device="cuda"), torch.rand(128, 8, 8, device="cuda")],
            "label": {"label": 1, "target": torch.rand(1, 8, 8, device="cuda"), "has_target": 1.0,
                      "lung": torch.ones(1, 8, 8, device="cuda"), "has_lung": 1.0, "extent": 3.0}}
    out = DLNetOutputd(loss=loss)(item)
    assert out["loss"].device.type == "cuda" and torch.isfinite(out["loss"])


@pytest.mark.usefixtures("one_torch_thread")
def test_gpu_recipe_trains_from_a_pack_and_stops_at_its_time_limit(pack: Path, tmp_path: Path):
    """scripts/train_dlnet_gpu.sh's config chain (train + train_packed + train_gpu) through the bundle command line,
    on the CPU here: the 2-s wall-clock limit ends the 30-epoch run inside its first epoch."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / "dlnet"
    shutil.copytree(ROOT / "bundles" / "dlnet" / "configs", work / "configs")
    (work / "models").mkdir()
    configs = [str(work / "configs" / f) for f in ("train.json", "train_packed.json", "train_gpu.json")]
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs),
         "--bundle_root", str(work), "--pack_dir", str(pack), "--image_size", "[64,64]",
         "--network_def#backbone", "resnet18", "--num_workers", "0", "--epoch_samples", "400",
         "--time_limit_s", "2"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Reached the time limit" in run.stderr + run.stdout
    log = run.stderr + run.stdout
    assert "Epoch: 1/30, Iter: 1/50" in log and "Iter: 50/50" not in log and "Epoch: 2/30" not in log
