"""``lungs``: LSNet's lung mask split into the patient's right (label 1) and left (label 2) lung."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy import ndimage

from lib.infers.base import RadiographInferTask
from lib.labels import LUNG_LABELS, compose_label
from pneumonitor.severity import split_lungs
from pneumonitor.transforms.presets import lsnet_preprocess


class LungsInfer(RadiographInferTask):
    """LSNet (bundle ``lsnet``) -> lung probability -> resized to the radiograph -> ``>= lung_threshold`` -> holes
    filled -> :func:`pneumonitor.severity.split_lungs` (two largest components, by side).

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
        loaded = self.networks.get(device)
        radiograph = data["radiograph"]
        x = lsnet_preprocess(loaded.image_size)(torch.from_numpy(radiograph.pixels[None]))
        x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
        with torch.inference_mode():
            probability = torch.sigmoid(loaded.network(x[None].float().to(device)))
            probability = F.interpolate(probability.cpu(), size=radiograph.shape, mode="bilinear", align_corners=False)
        threshold = float(data.get("lung_threshold", 0.5))
        lungs = ndimage.binary_fill_holes(probability[0, 0].numpy() >= threshold)
        right, left = split_lungs(lungs)
        result = {
            "right_lung_pixels": int(right.sum()),
            "left_lung_pixels": int(left.sum()),
            "lung_threshold": threshold,
            "rows": radiograph.shape[0],
            "columns": radiograph.shape[1],
        }
        return compose_label(right, left), result
