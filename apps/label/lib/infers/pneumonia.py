"""``pneumonia``: the paper's pneumonia mask (DLNet heatmap thresholded inside LSNet's lungs) as a label map.

Labels: 1 right lung, 2 left lung, 3 pneumonia (drawn over the lungs), so an annotator gets the whole picture to
correct. The metadata carries DLNet's probability and the severity (ratios in percent, scores 0-4 per lung).

An image that only has boxes (``boxes`` in its datastore info, ``[[x0, y0, x1, y1], ...]`` pixels, end-exclusive)
gets the stage-2 Grad-CAM proposal inside those boxes (:class:`pneumonitor.stage2.gradcam.GradCAMProposer`) as its
pneumonia region instead of the thresholded heatmap, unless the request says ``use_boxes: false``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from lib.infers.base import RadiographInferTask
from lib.infers.radiograph import NetworkCache
from lib.labels import LABELS, compose_label
from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer


class PneumoniaInfer(RadiographInferTask):
    """DLNet (bundle ``dlnet``) + LSNet (bundle ``lsnet``) through :class:`pneumonitor.inference.analyzer.Analyzer`.

    Args:
        path: the DLNet bundle folder.
        lsnet_path: the LSNet bundle folder.
        conf: the app's ``--conf`` dictionary.
    """

    def __init__(self, path: str | Path, lsnet_path: str | Path, conf: dict[str, str]) -> None:
        super().__init__(
            path,
            conf,
            kind="DLNet",
            labels=LABELS,
            description="DLNet heatmap thresholded inside LSNet's lungs (pneumonia 3 over lungs 1/2); "
            "Grad-CAM proposal inside the boxes for box-only images",
            config={
                # empty: the DLNet weights' validated operating point (else the paper's 0.62 / 0.8)
                "classification_threshold": "",
                # empty: the bundle's default; else one of its named operating points (e.g. high-specificity)
                "operating_point": "",
                "heatmap_threshold": "",
                "lung_threshold": 0.5,
                "use_boxes": True,
                # the spread of analyze (off / flip / flip+mc): SDs, intervals and the uncertain flag in the result
                "uncertainty": "flip",
            },
        )
        self.lung_networks = NetworkCache(lsnet_path, "LSNet")
        # one Grad-CAM proposer per served network: each new one registers its hooks on the network for good
        # (pneumonitor.stage2.gradcam), so one per request would pile hooks onto every later pass
        self._proposer: tuple[int, Any] | None = None
        self._proposer_lock = threading.Lock()  # the hooks hold one pass's activations: one proposal at a time

    def _proposer_for(self, dlnet: Any, device: str) -> Any:
        """The Grad-CAM proposer of the served DLNet (of an ensemble, the shipped DLNet, its localization member:
        Grad-CAM needs one network's layers), built once per network object (a promotion loads a new one). Called
        with ``_proposer_lock`` held."""
        from pneumonitor.networks.bundle import single_dlnet
        from pneumonitor.stage2.gradcam import GradCAMProposer

        member = single_dlnet(dlnet)
        if self._proposer is None or self._proposer[0] != id(member.network):
            self._proposer = (id(member.network), GradCAMProposer(member.network, member.image_size, device=device))
        return self._proposer[1]

    def is_valid(self) -> bool:
        return super().is_valid() and self.lung_networks.weights.is_file()

    def compute(self, data: dict[str, Any], device: str) -> tuple[np.ndarray, dict[str, Any]]:
        dlnet, lsnet = self.networks.get(device), self.lung_networks.get(device)
        settings = AnalysisSettings(
            classification_threshold=_optional_float(data.get("classification_threshold")),
            operating_point=str(data.get("operating_point") or "") or None,
            heatmap_threshold=_optional_float(data.get("heatmap_threshold")),
            lung_threshold=float(data.get("lung_threshold", 0.5)),
            uncertainty=str(data.get("uncertainty") or "flip"),
        )
        analyzer = Analyzer(dlnet, lsnet, settings=settings, device=device)
        settings = analyzer.settings  # thresholds not given: the DLNet weights' validated operating point
        radiograph = data["radiograph"]
        analysis = analyzer.analyze_one(radiograph)
        if analysis.status != "ok" or analysis.severity is None:
            raise ValueError(analysis.reason)
        severity = analysis.severity
        result: dict[str, Any] = {**severity.as_row(), **(analysis.uncertainty or {}), "source": "heatmap"}
        if analysis.ood:
            result["ood"] = "; ".join(analysis.ood)
        pneumonia = severity.pneumonia_mask
        boxes = data.get("boxes") or []
        if boxes and _truthy(data.get("use_boxes", True)):
            with self._proposer_lock:
                proposal = self._proposer_for(dlnet, device)(radiograph.pixels, [list(map(float, b)) for b in boxes])
            pneumonia = proposal.binary
            result.update(source="gradcam-proposal", boxes=len(boxes),
                          proposal_fraction_of_boxes=round(proposal.area_fraction_of_box, 4))
        result.update(
            classification_threshold=settings.classification_threshold,
            heatmap_threshold=settings.heatmap_threshold,
            rows=radiograph.shape[0],
            columns=radiograph.shape[1],
        )
        return compose_label(severity.right_lung, severity.left_lung, pneumonia), result


def _optional_float(value: Any) -> float | None:
    return None if value is None or str(value).strip() == "" else float(value)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("false", "0", "no", "off", "")
