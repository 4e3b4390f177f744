"""Retrain DLNet and LSNet from the annotators' labels with MONAI Label's :class:`BundleTrainTask`.

A run:

1. turns the datastore's ``final`` label maps (:mod:`lib.labels`) into the bundle's datalist items, with derived
   0/255 mask PNGs in ``<bundle>/train_data/``:

   - LSNet: ``{"image", "label": lung mask}`` (labels 1, 2 and 3 are all lung);
   - DLNet (stage-2 style: a submitted mask replaces the boxes): ``{"image", "label": 0/1, "mask": pneumonia mask}``,
     positive when the map has any pneumonia pixel; unlabeled images that still only have boxes join as
     ``{"image", "label": 1, "boxes"}``;

2. runs the bundle's ``train.json`` (plus the override configs named by ``--conf <model>_train_configs``, e.g.
   ``train_cpu.json``) with ``bundle_root`` set to a staging folder, starting from the served weights
   (``pretrained``), so the served ``models/model.pt`` is never written by the trainer;
3. scores the served and the candidate checkpoint on the validation split (:func:`validation_score`) and replaces
   the served ``models/model.pt`` atomically only when the candidate is better; infer tasks reload it on their next
   request. ``models/validation.json`` records every run's scores and decision.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from lib.infers.radiograph import resolve_radiograph_path
from lib.labels import lung_mask, pneumonia_mask
from pneumonitor.reading import read_radiograph
from pneumonitor.networks import load_network
from pneumonitor.networks.checkpoint import LoadedNetwork
from pneumonitor.severity import CLASSIFICATION_THRESHOLD, HEATMAP_THRESHOLD
from pneumonitor.transforms.presets import dlnet_preprocess, lsnet_preprocess

logger = logging.getLogger(__name__)


def _read_label(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)


def _save_mask(mask: np.ndarray, path: Path) -> str:
    from lib.datastore import write_png_atomically

    write_png_atomically(mask.astype(np.uint8) * 255, path)
    return str(path)


def _resize(array: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(array.float().cpu(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks with MONAI's metric; two empty masks agree perfectly (1.0)."""
    y_pred = torch.from_numpy(prediction.astype(np.float32))[None, None]
    y = torch.from_numpy(truth.astype(np.float32))[None, None]
    return float(compute_dice(y_pred, y, include_background=True, ignore_empty=False)[0, 0])


@torch.inference_mode()
def predicted_mask(loaded: LoadedNetwork, kind: str, image: str, lungs: np.ndarray | None = None) -> np.ndarray:
    """The mask a network gives for one image at the image's size: LSNet's lungs, or DLNet's pneumonia
    (probability >= 0.62 and heatmap >= 0.8, inside ``lungs``: the annotated lungs, to judge DLNet alone)."""
    radiograph = read_radiograph(resolve_radiograph_path(image))
    pixels = torch.from_numpy(radiograph.pixels[None])
    network = loaded.network.eval()
    device = next(network.parameters()).device
    if kind == "LSNet":
        x = torch.as_tensor(np.asarray(lsnet_preprocess(loaded.image_size)(pixels)), dtype=torch.float32)
        return _resize(torch.sigmoid(network(x[None].to(device))), radiograph.shape) >= 0.5
    x = torch.as_tensor(np.asarray(dlnet_preprocess(loaded.image_size)(pixels)), dtype=torch.float32)
    probability, heatmap = network.predict(x[None].to(device))
    if float(probability[0]) < CLASSIFICATION_THRESHOLD:
        return np.zeros(radiograph.shape, dtype=bool)
    region = _resize(heatmap, radiograph.shape) >= HEATMAP_THRESHOLD
    return region & lungs if lungs is not None else region


def validation_score(loaded: LoadedNetwork, kind: str, items: list[dict[str, Any]]) -> float:
    """Mean Dice against the annotators' labels over ``items`` (``{"image", "final"}``): lungs for LSNet,
    pneumonia for DLNet (an image correctly left empty counts 1)."""
    scores = []
    for item in items:
        label = _read_label(item["final"])
        if kind == "LSNet":
            scores.append(_dice(predicted_mask(loaded, kind, item["image"]), lung_mask(label)))
        else:
            lungs = lung_mask(label)
            scores.append(_dice(predicted_mask(loaded, kind, item["image"], lungs), pneumonia_mask(label)))
    return float(np.mean(scores)) if scores else float("nan")


class RadiographTrainTask(BundleTrainTask):
    """Bundle training of ``kind`` (``"DLNet"``/``"LSNet"``) from the datastore, with validated promotion.

    Args:
        path: the served bundle folder (``<model_dir>/dlnet`` or ``<model_dir>/lsnet``).
        conf: the app's ``--conf``; ``<name>_train_configs`` lists override configs in the bundle's ``configs/``.
        kind: which network the bundle trains.
        name: the task name (``dlnet``/``lsnet``).
    """

    def __init__(self, path: str | Path, conf: dict[str, str], kind: str, name: str) -> None:
        super().__init__(str(path), conf, load_strict=True)
        self.kind = kind
        self.name = name
        extra = conf.get(f"{name}_train_configs", "")
        self.extra_configs = [c.strip() for c in extra.split(",") if c.strip()]
        for config in self.extra_configs:
            if not (Path(path) / "configs" / config).is_file():
                logger.warning("%s: override config %s not in %s/configs; ignored", name, config, path)
        self.extra_configs = [c for c in self.extra_configs if (Path(path) / "configs" / c).is_file()]
        self._staging: Path | None = None
        self._split: dict[str, list[dict[str, Any]]] = {}

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.update(max_epochs=int(self.conf.get(f"{self.name}_max_epochs", 30)), val_split=0.2, multi_gpu=False)
        return options

    # -- data ------------------------------------------------------------------------------------------------
    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        cache = Path(self.bundle_path) / "train_data"
        items: list[dict[str, Any]] = []
        for entry in datastore.datalist():
            if not entry or not entry.get("label"):
                continue
            image, final = entry["image"], entry["label"]
            label = _read_label(final)
            stem = Path(final).stem  # the image id (DICOM UIDs contain dots)
            if self.kind == "LSNet":
                mask = _save_mask(lung_mask(label), cache / f"{stem}_lungs.png")
                items.append({"image": image, "label": mask, "final": final})
            else:
                pneumonia = pneumonia_mask(label)
                mask = _save_mask(pneumonia, cache / f"{stem}_pneumonia.png")
                items.append({"image": image, "label": int(pneumonia.any()), "mask": mask, "final": final})
        if self.kind == "DLNet":
            for image_id in sorted(datastore.get_unlabeled_images()):
                boxes = datastore.get_image_info(image_id).get("boxes")
                if boxes:
                    items.append({"image": datastore.get_image_uri(image_id), "label": 1, "boxes": boxes})
        logger.info("%s: %d training items from the datastore", self.name, len(items))
        return items

    def _partition_datalist(self, datalist, request, shuffle=False):
        # validation needs annotator masks: box-only items always train
        labeled = [d for d in datalist if "final" in d]
        boxed = [d for d in datalist if "final" not in d]
        val_split = float(request.get("val_split", 0.2))
        n_val = int(round(len(labeled) * val_split)) if val_split > 0 else 0
        if val_split > 0 and len(labeled) >= 2:
            n_val = max(1, n_val)
        rng = np.random.default_rng(int(request.get("seed", 0)))
        order = rng.permutation(len(labeled))
        val = [labeled[i] for i in order[:n_val]]
        train = [labeled[i] for i in order[n_val:]] + boxed
        self._split = {"train": train, "val": val}
        strip = lambda rows: [{k: v for k, v in r.items() if k != "final"} for r in rows]  # noqa: E731
        return strip(train), (strip(val) if val else strip(train[:1]))

    # -- run -------------------------------------------------------------------------------------------------
    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        staging = Path(self.bundle_path) / "staging" / time.strftime("%Y%m%d-%H%M%S")
        (staging / "models").mkdir(parents=True, exist_ok=True)
        self._staging = staging
        overrides["bundle_root"] = str(staging)
        # the bundle's configs refer to @bundle_root for their own files (e.g. configs/logging.conf)
        shutil.copytree(Path(self.bundle_path) / "configs", staging / "configs", dirs_exist_ok=True)
        for key, value in (("num_workers", 0),):
            if self.bundle_config.get(key) is not None:
                overrides[key] = value
        return overrides

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        import monai.bundle

        configs = [self.bundle_config_path] + [
            str(Path(self.bundle_path) / "configs" / name) for name in self.extra_configs
        ]
        monai.bundle.run(
            run_id=request.get("run_id", "run"),
            init_id=None,
            final_id=None,
            meta_file=self.bundle_metadata_path,
            config_file=configs if len(configs) > 1 else configs[0],
            **overrides,
        )

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        request = dict(request)
        request["multi_gpu"] = False  # the staging/promotion logic follows the single-process run
        super().__call__(request, datastore)
        return self.promote()

    def training_image_size(self) -> tuple[int, int] | None:
        """``image_size`` of the training configs (``train.json`` + overrides), or None when they name none."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([self.bundle_config_path] + [
            str(Path(self.bundle_path) / "configs" / name) for name in self.extra_configs
        ])
        size = parser.config.get("image_size")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
        return (int(size), int(size)) if isinstance(size, int) else None

    def _candidate(self) -> Path | None:
        if self._staging is None:
            return None
        models = self._staging / "models"
        exact = models / "model.pt"
        if exact.is_file():
            return exact
        found = sorted(models.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def promote(self) -> dict[str, Any]:
        """Serve the candidate checkpoint when it beats the served one on the validation split."""
        served = Path(self.bundle_path) / "models" / "model.pt"
        candidate = self._candidate()
        record: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": self.name,
                                  "train_items": len(self._split.get("train", [])),
                                  "val_items": len(self._split.get("val", []))}
        if candidate is None:
            record.update(decision="kept", reason="the run wrote no checkpoint")
            return self._record(record)
        val = self._split.get("val") or []
        size = self.training_image_size()
        candidate_net = load_network(candidate, self.kind, image_size=size)
        record["candidate_score"] = validation_score(candidate_net, self.kind, val)
        if served.is_file():
            record["served_score"] = validation_score(load_network(served, self.kind), self.kind, val)
        else:
            record["served_score"] = None
        better = record["served_score"] is None or (
            np.isfinite(record["candidate_score"]) and record["candidate_score"] > record["served_score"]
        )
        if better:
            # the served file says at which size it was trained (the inference config may name another)
            payload = torch.load(candidate, map_location="cpu", weights_only=True)
            if isinstance(payload, dict) and size is not None:
                payload.setdefault("image_size", list(size))
            tmp = served.with_name(f".{served.name}.partial")
            torch.save(payload, tmp)
            os.replace(tmp, served)
            record.update(decision="promoted", reason="better on validation" if val else "no served weights")
        else:
            record.update(decision="kept", reason="not better on validation")
        logger.info("%s: %s", self.name, record)
        return self._record(record)

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        path = Path(self.bundle_path) / "models" / "validation.json"
        history = json.loads(path.read_text()).get("history", []) if path.is_file() else []
        history.append(record)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps({"last": record, "history": history}, indent=2, default=str))
        os.replace(tmp, path)
        return record
