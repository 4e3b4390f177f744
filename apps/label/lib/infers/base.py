"""A :class:`BundleInferTask` for 2-D radiographs whose computation is pneumonitor's own pipeline.

MONAI Label's :class:`BundleInferTask` reads the bundle (``configs/inference.json``, ``configs/metadata.json``,
``models/model.pt``), reports its version and its model files, and decides whether the task is served. The bundle's
generic pre/post chain is not used: a radiograph needs pneumonitor's reader (DICOM VOI LUT, MONOCHROME1) and the
results must be resized back to the radiograph and split into lungs exactly as ``pneumonitor analyze`` does.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monai.inferers import Inferer, SimpleInferer
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.infers.radiograph import NetworkCache, ReadRadiographd, write_label

logger = logging.getLogger(__name__)


class RadiographInferTask(BundleInferTask):
    """Base of the app's infer tasks.

    Args:
        path: the bundle folder (``<model_dir>/dlnet`` or ``<model_dir>/lsnet``).
        conf: the app's ``--conf`` dictionary.
        kind: ``"DLNet"`` or ``"LSNet"``: which network ``models/model.pt`` holds.
        labels: label name -> value of the map this task returns (:mod:`lib.labels`).
        description: shown in ``/info`` and OHIF.
        config: options shown in OHIF's panel and accepted in the request.
    """

    def __init__(
        self,
        path: str | Path,
        conf: dict[str, str],
        kind: str,
        labels: dict[str, int],
        description: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            str(path),
            conf,
            type=InferType.SEGMENTATION,
            pre_filter=None,
            post_filter=None,
            add_post_restore=False,
            load_strict=True,
        )
        self.kind = kind
        self.networks = NetworkCache(path, kind)
        #: image QC gate default (``--conf qc on|warn|off``); a request's ``qc`` option overrides it
        self.qc_mode = str(conf.get("qc", "on")).strip().lower()
        if not self.valid:
            return
        # the bundle's channel_def names network channels; annotators see the app's label map instead
        self.labels = dict(labels)
        self.dimension = 2
        self.description = description
        # weights are loaded by pneumonitor (any checkpoint layout, architecture checked), not by MONAI Label
        self.network = None
        self._config.update({"qc": self.qc_mode, **(config or {})})  # image QC gate: on / warn / off

    def is_valid(self) -> bool:
        return bool(self.valid) and self.networks.weights.is_file()

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        return [ReadRadiographd(keys="image")]

    def inferer(self, data: dict[str, Any] | None = None) -> Inferer:
        return SimpleInferer()

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        return []

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        from pneumonitor.reading import UnsupportedInput

        try:
            data = super().run_pre_transforms(data, transforms)
        except UnsupportedInput as exc:
            raise HTTPException(status_code=422, detail=f"image skipped: {exc}") from exc
        except (OSError, ValueError) as exc:  # a damaged file: the reason, not a traceback
            raise HTTPException(
                status_code=422, detail=f"image skipped: could not be read ({type(exc).__name__}: {exc})"
            ) from exc
        return self.quality_gate(data)

    def quality_gate(self, data: dict[str, Any]) -> dict[str, Any]:
        """The image QC gate of ``pneumonitor analyze`` (request option ``qc``: on / warn / off, default on):
        a lateral, inverted, rotated image or a non-radiograph gets a 422 with the finding (``on``) or a ``qc``
        field in the result (``warn``)."""
        from pneumonitor.qc import QCWeightsNotFound, shared_gate

        mode = str(data.get("qc") or self.qc_mode).strip().lower()
        if mode == "off":
            return data
        try:
            gate = shared_gate(device="cpu")  # 0.2 M parameters at 96 px: a GPU would not pay for the transfer
        except QCWeightsNotFound as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        result = gate.check([data["radiograph"].pixels])[0]
        if not result.passed and mode == "on":
            raise HTTPException(status_code=422, detail=f"image skipped: {result.refusal_reason()}")
        data["qc_finding"] = result.describe() or "pass"
        return data

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        """Fill ``data["pred"]`` (``uint8 (rows, columns)`` label map) and ``data["result"]`` (JSON-able dict)."""
        try:
            label, result = self.compute(data, device)
        except ValueError as exc:  # InsufficientLungs, bad shapes: the user gets the reason, not a traceback
            raise HTTPException(status_code=422, detail=f"no result for this image: {exc}") from exc
        if "qc_finding" in data:
            result = {**result, "qc": data["qc_finding"]}
        data[self.output_label_key] = label
        data[self.output_json_key] = result
        return data

    @abstractmethod
    def compute(self, data: dict[str, Any], device: str) -> tuple[Any, dict[str, Any]]:
        """The label map and the result metadata of ``data["radiograph"]``."""

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        extension = extension or data.get("result_extension") or ".png"
        path = write_label(data[self.output_label_key], data["radiograph"], extension)
        return path, dict(data.get(self.output_json_key) or {})
