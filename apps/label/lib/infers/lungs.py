"""``lungs``: LSNet's lung mask split into the patient's right (label 1) and left (label 2) lung."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lib.infers.base import RadiographInferTask
from lib.labels import LUNG_LABELS, compose_label
from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
from pneumonitor.severity import split_lungs


class LungsInfer(RadiographInferTask):
    """LSNet (bundle ``lsnet``) -> lung probability at the radiograph's size -> ``>= lung_threshold``, holes filled
    (:meth:`Analyzer.lungs`, :meth:`Analyzer.lung_mask`: what ``analyze`` does) -> :func:`pneumonitor.severity.split_lungs`
    (two largest components, by side).

    Result metadata: ``right_lung_pixels``, ``left_lung_pixels``, ``lung_threshold``.
    """

    def __init__(self, path: str | Path, conf: dict[str, str]) -> None:
        super().__init__(
            path,
            conf,
            kind="LSNet",
            labels=LUNG_LABELS,
            description="LSNet lung segmentation: the patient's right lung (1) and left lung (2)",
            config={"lung_threshold": 0.5},
        )

    def compute(self, data: dict[str, Any], device: str) -> tuple[np.ndarray, dict[str, Any]]:
        radiograph = data["radiograph"]
        threshold = float(data.get("lung_threshold", 0.5))
        analyzer = Analyzer(None, self.networks.get(device), AnalysisSettings(lung_threshold=threshold), device=device)
        lungs = analyzer.lung_mask(analyzer.lungs(radiograph))
        right, left = split_lungs(lungs)
        result = {
            "right_lung_pixels": int(right.sum()),
            "left_lung_pixels": int(left.sum()),
            "lung_threshold": threshold,
            "rows": radiograph.shape[0],
            "columns": radiograph.shape[1],
        }
        return compose_label(right, left), result
