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
   (``pretrained``; of a served DLNet ensemble, the member of the run's architecture:
   :func:`pneumonitor.networks.bundle.starting_weights`), so the served ``models/model.pt`` is never written by the
   trainer;
3. scores the served and the candidate weights on the validation split (:func:`validation_score`), both at the
   served model's operating point (``classification_threshold``/``heatmap_threshold`` of its ``inference.json``,
   the thresholds its infer task answers with), and serves the candidate only when it is better
   (:func:`pneumonitor.networks.serve_trained_weights`: ``models/model.pt`` replaced atomically, the run's
   ``network_def`` and ``image_size`` written into ``inference.json``); infer tasks reload it on their next request.
   ``models/validation.json`` records every run's scores and decision.
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
from monai.metrics import compute_dice
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from lib.infers.radiograph import resolve_radiograph_path
from lib.labels import lung_mask, pneumonia_mask
from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
from pneumonitor.networks import LoadedNetwork, load_bundle, serve_trained_weights
from pneumonitor.networks.bundle import read_inference_config, starting_weights
from pneumonitor.publishing import write_json
from pneumonitor.reading import read_radiograph

logger = logging.getLogger(__name__)


class NothingToTrain(ValueError):
    """A training request on a datastore that holds nothing this trainer can learn from."""


def _read_label(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)


def _save_mask(mask: np.ndarray, path: Path) -> str:
    from lib.datastore import write_png_atomically

    write_png_atomically(mask.astype(np.uint8) * 255, path)
    return str(path)


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks with MONAI's metric; two empty masks agree perfectly (1.0)."""
    y_pred = torch.from_numpy(prediction.astype(np.float32))[None, None]
    y = torch.from_numpy(truth.astype(np.float32))[None, None]
    return float(compute_dice(y_pred, y, include_background=True, ignore_empty=False)[0, 0])


def operating_point(bundle: str | os.PathLike) -> AnalysisSettings:
    """The thresholds a bundle's infer task answers with: its ``inference.json``'s operating point (the paper's
    0.62 / 0.8 where it names none), as :class:`AnalysisSettings`."""
    config = read_inference_config(bundle)
    return AnalysisSettings(classification_threshold=config.get("classification_threshold"),
                            heatmap_threshold=config.get("heatmap_threshold"))


def network_analyzer(loaded: LoadedNetwork, kind: str, settings: AnalysisSettings) -> Analyzer:
    """An :class:`Analyzer` serving one network's entry points, on the device the network is on."""
    device = next(loaded.network.parameters()).device
    return Analyzer(loaded, None, settings, device) if kind == "DLNet" else Analyzer(None, loaded, settings, device)


def predicted_mask(analyzer: Analyzer, kind: str, image: str, lungs: np.ndarray | None = None) -> np.ndarray:
    """The mask a network gives for one image at the image's size: LSNet's lungs (``>= lung_threshold``), or DLNet's
    pneumonia at the analyzer's operating point and severity rule (``Analyzer.pneumonia_mask``) inside ``lungs``: the
    annotated lungs, to judge DLNet alone."""
    radiograph = read_radiograph(resolve_radiograph_path(image))
    if kind == "LSNet":
        return analyzer.lungs(radiograph) >= analyzer.settings.lung_threshold
    return analyzer.pneumonia_mask(radiograph, np.ones(radiograph.shape, dtype=bool) if lungs is None else lungs)


def validation_score(
    loaded: LoadedNetwork, kind: str, items: list[dict[str, Any]], settings: AnalysisSettings | None = None
) -> float:
    """Mean Dice against the annotators' labels over ``items`` (``{"image", "final"}``): lungs for LSNet,
    pneumonia for DLNet at ``settings``' operating point (an image correctly left empty counts 1)."""
    analyzer = network_analyzer(loaded, kind, settings or AnalysisSettings())
    scores = []
    for item in items:
        label = _read_label(item["final"])
        if kind == "LSNet":
            scores.append(_dice(predicted_mask(analyzer, kind, item["image"]), lung_mask(label)))
        else:
            lungs = lung_mask(label)
            scores.append(_dice(predicted_mask(analyzer, kind, item["image"], lungs), pneumonia_mask(label)))
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
        if not items:  # else MONAI's DataLoader fails later with a message about samplers, not about the data
            raise NothingToTrain(
                f"{self.name}: nothing to train on: the datastore has no saved label"
                + (" and no image with boxes" if self.kind == "DLNet" else "")
                + "; save at least one label (Save in OHIF, or PUT /datastore/label) and train again"
            )
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

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        # the served weights may be a DLNet ensemble (the shipped 0.5.x), whose state dict fits no single training
        # network: a run starts from the member of its own architecture (starting_weights), else from model.pt
        if pretrained and os.path.exists(model_pytorch):
            model_pytorch = str(starting_weights(self.bundle_path, self.training_configs(),
                                                 Path(self.bundle_path) / "staging" / "starting_weights.pt"))
        super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def training_configs(self) -> list[str]:
        """The configs a run merges: ``train.json`` and the overrides of ``--conf <name>_train_configs``."""
        return [self.bundle_config_path] + [str(Path(self.bundle_path) / "configs" / n) for n in self.extra_configs]

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        import monai.bundle

        configs = self.training_configs()
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

    def promote(self) -> dict[str, Any]:
        """Serve the candidate weights when they beat the served ones on the validation split, both judged at the
        served model's operating point (:func:`operating_point`)."""
        served = Path(self.bundle_path)
        candidate = self._staging / "models" / "model.pt" if self._staging is not None else None
        record: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": self.name,
                                  "train_items": len(self._split.get("train", [])),
                                  "val_items": len(self._split.get("val", []))}
        if candidate is None or not candidate.is_file():
            record.update(decision="kept", reason="the run wrote no checkpoint")
            return self._record(record)
        val = self._split.get("val") or []
        settings = operating_point(served)
        record.update(classification_threshold=settings.classification_threshold,
                      heatmap_threshold=settings.heatmap_threshold)
        # the staging copy becomes a bundle of the candidate: its inference.json takes the run's architecture and size
        serve_trained_weights(candidate, self.training_configs(), self._staging)
        record["candidate_score"] = validation_score(load_bundle(self._staging, kind=self.kind), self.kind, val, settings)
        if (served / "models" / "model.pt").is_file():
            record["served_score"] = validation_score(load_bundle(served, kind=self.kind), self.kind, val, settings)
        else:
            record["served_score"] = None
        better = record["served_score"] is None or (
            np.isfinite(record["candidate_score"]) and record["candidate_score"] > record["served_score"]
        )
        if better:
            serve_trained_weights(candidate, self.training_configs(), served)
            record.update(decision="promoted", reason="better on validation" if val else "no served weights")
        else:
            record.update(decision="kept", reason="not better on validation")
        logger.info("%s: %s", self.name, record)
        return self._record(record)

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        path = Path(self.bundle_path) / "models" / "validation.json"
        history = json.loads(path.read_text()).get("history", []) if path.is_file() else []
        history.append(record)
        write_json(path, {"last": record, "history": history})
        return record
