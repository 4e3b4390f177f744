"""DLNet localization targets (Amer et al. 2020, Sec. III-A): boxes or a mask -> a soft target at the heatmap's size.

The paper builds the stage-1 target from the ground-truth boxes: a binary image of the boxes, dilated with a 5x5
kernel, then Gaussian-blurred. Here every step runs at the localization maps' resolution (``image_size / 8``, 56x56 at
448 px), so the dilation widens each box by 2 map cells (16 px at 448) on each side and the blur ``sigma`` is in map
cells too. A localization mask (e.g. a radiologist's pneumonia mask) takes the place of the boxes when given: a map
cell is foreground when any of its pixels is.

Items whose location is unknown (a positive without boxes or mask) get ``has_target = 0``: the loss then masks their
localization term out (:class:`pneumonitor.networks.DLNetLoss`). Negatives have a known, empty target.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from pneumonitor.transforms.io import LoadMask

__all__ = ["LocalizationTarget", "LocalizationTargetd", "boxes_to_map", "soften_target"]


def boxes_to_map(
    boxes: Sequence[Sequence[float]], image_shape: Sequence[int], map_shape: Sequence[int]
) -> np.ndarray:
    """Binary ``(h, w)`` image of ``boxes`` rescaled from the image grid to the map grid.

    Args:
        boxes: ``[[x0, y0, x1, y1], ...]`` in pixels of the image, end-exclusive (``pneumonitor.datasets.boxes``).
        image_shape: ``(H, W)`` of the image the boxes refer to.
        map_shape: ``(h, w)`` of the output.

    A map cell is set when the box covers any part of it (floor of the start, ceil of the end).
    """
    height, width = (int(s) for s in map_shape)
    scale_y, scale_x = height / float(image_shape[0]), width / float(image_shape[1])
    out = np.zeros((height, width), dtype=bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        c0, r0 = max(0, int(np.floor(x0 * scale_x))), max(0, int(np.floor(y0 * scale_y)))
        c1, r1 = min(width, int(np.ceil(x1 * scale_x))), min(height, int(np.ceil(y1 * scale_y)))
        if c1 > c0 and r1 > r0:
            out[r0:r1, c0:c1] = True
    return out


def soften_target(binary: np.ndarray, dilation: int = 5, sigma: float = 1.0) -> np.ndarray:
    """``dilation x dilation`` binary dilation, then a Gaussian blur of ``sigma`` cells; float32 in [0, 1]."""
    region = np.asarray(binary, dtype=bool)
    if dilation > 1 and region.any():
        region = ndimage.binary_dilation(region, structure=np.ones((dilation, dilation), dtype=bool))
    soft = region.astype(np.float32)
    if sigma > 0:
        soft = ndimage.gaussian_filter(soft, sigma=sigma, mode="constant")
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def _mask_to_map(mask: np.ndarray, map_shape: Sequence[int]) -> np.ndarray:
    """Binary ``(H, W)`` mask -> binary ``(h, w)``: a cell is set when any of its pixels is (area fraction > 0)."""
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32) > 0.5, dtype=torch.float32)[None, None]
    fraction = torch.nn.functional.adaptive_avg_pool2d(tensor, tuple(int(s) for s in map_shape))
    return (fraction[0, 0] > 0).numpy()


class LocalizationTarget(Transform):
    """Boxes or a mask -> ``(target (1, h, w) float32 in [0, 1], region (1, h, w) float32 0/1)``.

    ``region`` is the binary (undilated, unblurred) ground truth at the map resolution (used by the evaluation's
    heatmap-threshold sweep); ``target`` is what the MSE term regresses.

    Args:
        map_size: ``(h, w)`` of DLNet's localization maps (input size / 8).
        dilation: side of the square dilation kernel in map cells (paper: 5).
        sigma: Gaussian blur in map cells.
    """

    def __init__(self, map_size: Sequence[int] | int, dilation: int = 5, sigma: float = 1.0) -> None:
        self.map_size = (map_size, map_size) if isinstance(map_size, int) else tuple(int(s) for s in map_size)
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.dilation = int(dilation)
        self.sigma = float(sigma)

    def __call__(
        self,
        image_shape: Sequence[int],
        boxes: Sequence[Sequence[float]] | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is not None:
            array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            region = _mask_to_map(array.reshape(array.shape[-2:]), self.map_size)
        else:
            region = boxes_to_map(boxes or [], image_shape, self.map_size)
        target = soften_target(region, self.dilation, self.sigma)
        return torch.from_numpy(target[None]), torch.from_numpy(region[None].astype(np.float32))


class LocalizationTargetd(MapTransform):
    """Adds ``target`` (1, h, w), ``has_target`` (scalar 0/1) and optionally ``region`` to a DLNet item.

    Place it right after the image is loaded (before resizing): box coordinates refer to the stored image.
    The source keys (``boxes``, ``mask``) are removed afterwards because their lengths vary between items and
    MONAI's collate could not batch them.

    Args:
        keys: the image key (its spatial shape gives the box scale).
        map_size: ``(h, w)`` of the localization maps (``image_size // 8``).
        boxes_key, mask_key: item keys of the boxes (``[[x0, y0, x1, y1], ...]`` pixels) and of a mask PNG path
            (``""`` or absent = none; a mask wins over boxes).
        label_key: the 0/1 label (decides ``has_target`` when ``has_localization_key`` is absent).
        has_localization_key: an explicit 0/1 flag from the datalist (``pneumonitor datasets mix`` writes one).
        negatives_have_target: without the explicit flag, whether negatives count as localized (empty target).
        target_key, has_target_key, region_key: output keys (``region_key=None`` skips the binary region).
        dilation, sigma: see :class:`LocalizationTarget`.
        keep_sources: keep ``boxes``/``mask`` in the item (only for batch size 1 or equal lengths).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        map_size: Sequence[int] | int = 56,
        boxes_key: str = "boxes",
        mask_key: str = "mask",
        label_key: str = "label",
        has_localization_key: str = "has_localization",
        negatives_have_target: bool = True,
        target_key: str = "target",
        has_target_key: str = "has_target",
        region_key: str | None = "region",
        dilation: int = 5,
        sigma: float = 1.0,
        keep_sources: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.target = LocalizationTarget(map_size=map_size, dilation=dilation, sigma=sigma)
        self.mask_loader = LoadMask()
        self.boxes_key, self.mask_key, self.label_key = boxes_key, mask_key, label_key
        self.has_localization_key = has_localization_key
        self.negatives_have_target = negatives_have_target
        self.target_key, self.has_target_key, self.region_key = target_key, has_target_key, region_key
        self.keep_sources = keep_sources

    def _has_target(self, d: Mapping[Hashable, Any], localized: bool) -> float:
        if self.has_localization_key in d and d[self.has_localization_key] not in (None, ""):
            return float(int(d[self.has_localization_key]))
        if localized:
            return 1.0
        label = d.get(self.label_key)
        is_negative = label is not None and float(np.asarray(label).reshape(-1)[0]) == 0.0
        return 1.0 if (is_negative and self.negatives_have_target) else 0.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image_shape = tuple(int(s) for s in d[key].shape[-2:])
            boxes = d.get(self.boxes_key) or []
            mask_path = d.get(self.mask_key) or ""
            mask = None
            # MONAI's load_decathlon_datalist joins an empty entry to the dataset folder: a folder means "no mask"
            if isinstance(mask_path, (str, Path)) and str(mask_path) and not Path(mask_path).is_dir():
                if not Path(mask_path).is_file():
                    raise FileNotFoundError(f"localization mask {mask_path} does not exist")
                mask = self.mask_loader(mask_path)
                if tuple(mask.shape[-2:]) != image_shape:
                    raise ValueError(
                        f"mask {mask_path} is {tuple(mask.shape[-2:])}, its image {image_shape}: they must match"
                    )
            target, region = self.target(image_shape, boxes=boxes, mask=mask)
            d[self.target_key] = target
            d[self.has_target_key] = torch.tensor(self._has_target(d, bool(len(boxes)) or mask is not None))
            if self.region_key is not None:
                d[self.region_key] = region
        if not self.keep_sources:
            d.pop(self.boxes_key, None)
            d.pop(self.mask_key, None)
        return d
