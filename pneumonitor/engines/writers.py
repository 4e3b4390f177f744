"""Writers the bundles' inference post-processing uses."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["SavePNGd"]


class SavePNGd(MapTransform):
    """Write ``(1, h, w)`` maps as 8-bit PNGs at the source image's size: ``<output_dir>/<stem>_<postfix>.png``.

    Values are clipped to [0, 1] and scaled to 0-255 (``round(255 * clip(x, 0, 1))``, as ``pneumonitor analyze``
    writes heatmaps). The map is resized (``mode``: ``bilinear`` for heatmaps, ``nearest`` for masks) to the
    ``spatial_shape`` of its meta data (the stored image's rows and columns) and written row-major, through a
    temporary file and a rename. The path written is stored under ``<key>_path``.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str, output_postfix: str = "heatmap", mode: str = "bilinear",
        meta_key: str = "image", allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.output_postfix, self.mode, self.meta_key = output_dir, output_postfix, mode, meta_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from pathlib import Path

        from pneumonitor.publishing import unit_to_uint8, write_png

        d = dict(data)
        meta = getattr(d.get(self.meta_key), "meta", {}) or {}
        source = Path(str(meta.get("filename_or_obj", "image")))
        stem = source.name.split(".")[0]
        for key in self.key_iterator(d):
            array = torch.as_tensor(d[key], dtype=torch.float32).detach().cpu().reshape(1, 1, *d[key].shape[-2:])
            shape = meta.get("spatial_shape")
            if shape is not None:
                size = tuple(int(s) for s in np.asarray(shape).reshape(-1)[:2])
                align = None if self.mode == "nearest" else False
                array = torch.nn.functional.interpolate(array, size=size, mode=self.mode, align_corners=align)
            pixels = unit_to_uint8(array[0, 0].numpy())
            path = write_png(Path(self.output_dir) / f"{stem}_{self.output_postfix}.png", pixels)
            d[f"{key}_path"] = str(path)
        return d
