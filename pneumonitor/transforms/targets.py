"""DLNet localization targets: boxes or a mask -> the lesion's **area fraction** per heatmap cell.

The paper (Amer et al. 2020, Sec. III-A) builds the stage-1 target from the ground-truth boxes: a binary image of the
boxes, dilated with a 5x5 kernel, then Gaussian-blurred. Every step here runs at the **image's** resolution, as the
paper's pixel kernel implies: boxes are drawn on the image grid, dilated by a ``dilation x dilation`` pixel kernel and
blurred by ``sigma`` pixels; a localization mask (a radiologist's pneumonia mask, a stage-2 proposal) is the truth
itself and is neither dilated nor blurred. The result is then area-averaged onto the map grid (``image_size / 8``),
so each map cell holds the fraction of its pixels that is lesion: a heatmap that fits the target covers the lesion's
area, and the Pneumonia Ratio of a perfect fit equals that of the mask (tested on the radiologist masks).

The lungs (``lung_region``: a human or LSNet lung mask, any resolution with the image's field of view) are pooled the
same way; the loss uses them to keep the heatmap inside the lungs where the lesion is not outlined, and to compare the
heatmap's lung coverage with an expert extent score (:class:`pneumonitor.networks.DLNetLoss`).

Items whose location is unknown (a positive without boxes or mask) get ``has_target = 0``: the loss then masks their
localization term out. Negatives have a known, empty target.
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

from pneumonitor.transforms.loading import LoadMask

__all__ = ["LocalizationTarget", "LocalizationTargetd", "area_fraction", "boxes_to_image", "boxes_to_map",
           "soften_target"]


def boxes_to_map(
    boxes: Sequence[Sequence[float]], image_shape: Sequence[int], map_shape: Sequence[int]
) -> np.ndarray:
    """Binary ``(h, w)`` image of ``boxes`` rescaled from the image grid to a coarser grid (Grad-CAM's box gate).

    A cell is set when the box covers any part of it (floor of the start, ceil of the end).
    """
    height, width = (int(s) for s in map_shape)
    scale_y, scale_x = height / float(image_shape[0]), width / float(image_shape[1])
    scaled = [[b[0] * scale_x, b[1] * scale_y, b[2] * scale_x, b[3] * scale_y] for b in boxes]
    return boxes_to_image(scaled, (height, width))


def boxes_to_image(boxes: Sequence[Sequence[float]], image_shape: Sequence[int], dilation: int = 1) -> np.ndarray:
    """Binary ``(H, W)`` image of ``boxes`` (pixels, ``[x0, y0, x1, y1]`` end-exclusive), each box grown by the
    ``dilation x dilation`` square kernel (a box dilated by a square is the box widened by ``dilation // 2`` pixels
    on each side: drawn directly, no image-sized morphology)."""
    height, width = (int(s) for s in image_shape)
    grow = (int(dilation) - 1) // 2
    out = np.zeros((height, width), dtype=bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        c0, r0 = max(0, int(np.floor(x0)) - grow), max(0, int(np.floor(y0)) - grow)
        c1, r1 = min(width, int(np.ceil(x1)) + grow), min(height, int(np.ceil(y1)) + grow)
        if c1 > c0 and r1 > r0:
            out[r0:r1, c0:c1] = True
    return out


def soften_target(binary: np.ndarray, dilation: int = 5, sigma: float = 1.0) -> np.ndarray:
    """``dilation x dilation`` binary dilation, then a Gaussian blur of ``sigma`` (same grid); float32 in [0, 1]."""
    region = np.asarray(binary, dtype=bool)
    if dilation > 1 and region.any():
        region = ndimage.binary_dilation(region, structure=np.ones((dilation, dilation), dtype=bool))
    soft = region.astype(np.float32)
    if sigma > 0:
        soft = ndimage.gaussian_filter(soft, sigma=sigma, mode="constant")
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def area_fraction(image: np.ndarray, map_shape: Sequence[int]) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(h, w)`` float32: the mean over the pixels of each map cell (area pooling)."""
    tensor = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    pooled = torch.nn.functional.adaptive_avg_pool2d(tensor, tuple(int(s) for s in map_shape))
    return pooled[0, 0].clamp(0.0, 1.0).numpy().astype(np.float32)


class LocalizationTarget(Transform):
    """Boxes or a mask -> ``(target (1, h, w) float32 in [0, 1], region (1, h, w) float32 0/1)``.

    ``target`` is the lesion's area fraction per map cell (what the heatmap regresses); ``region`` is the cells at
    least half covered (the binary truth the evaluation's heatmap-threshold sweep compares with).

    Args:
        map_size: ``(h, w)`` of DLNet's localization maps (input size / 8).
        dilation: side of the square dilation kernel of boxes, in image pixels (paper: 5). Masks are not dilated.
        sigma: Gaussian blur of boxes, in image pixels. Masks are not blurred.
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
            truth = (array.reshape(array.shape[-2:]) > 0.5).astype(np.float32)
        elif boxes:
            truth = soften_target(boxes_to_image(boxes, image_shape, self.dilation), dilation=1, sigma=self.sigma)
        else:
            empty = np.zeros(self.map_size, dtype=np.float32)
            return torch.from_numpy(empty[None]), torch.from_numpy(empty[None].copy())
        target = area_fraction(truth, self.map_size)
        region = (target >= 0.5).astype(np.float32)
        return torch.from_numpy(target[None]), torch.from_numpy(region[None])


#: the item keys a localization target is built from (boxes, a mask PNG, a lung mask PNG): their lengths vary between
#: items, so whatever builds the target (this transform, or a training pack's loader) drops them from the item
LOCALIZATION_SOURCE_KEYS: tuple[str, str, str] = ("boxes", "mask", "lung_region")


class LocalizationTargetd(MapTransform):
    """Adds ``target`` (1, h, w), ``has_target`` (scalar 0/1), ``lung`` (1, h, w), ``has_lung``, ``extent`` (the
    item's expert 0-8 extent as a scalar tensor, -1 when unknown) and optionally ``region`` to a DLNet item.

    Place it right after the image is loaded (before resizing): box coordinates refer to the stored image.
    The source keys (``boxes``, ``mask``, ``lung_region``) are removed afterwards because their lengths vary between
    items and MONAI's collate could not batch them.

    Args:
        keys: the image key (its spatial shape gives the box scale).
        map_size: ``(h, w)`` of the localization maps (``image_size // 8``).
        boxes_key, mask_key: item keys of the boxes (``[[x0, y0, x1, y1], ...]`` pixels) and of a mask PNG path
            (``""`` or absent = none; a mask wins over boxes).
        lung_region_key: item key of a lung mask PNG (any size, same field of view; ``""``/absent = unknown).
        label_key: the 0/1 label (decides ``has_target`` when ``has_localization_key`` is absent).
        has_localization_key: an explicit 0/1 flag from the datalist (``pneumonitor datasets mix`` writes one).
        negatives_have_target: without the explicit flag, whether negatives count as localized (empty target).
        target_key, has_target_key, region_key, lung_key: output keys (``region_key=None`` skips the region).
        extent_key: the item's expert extent (kept, made a tensor; -1 when absent).
        dilation, sigma: see :class:`LocalizationTarget` (boxes only, image pixels).
        keep_sources: keep ``boxes``/``mask`` in the item (only for batch size 1 or equal lengths).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        map_size: Sequence[int] | int = 56,
        boxes_key: str = LOCALIZATION_SOURCE_KEYS[0],
        mask_key: str = LOCALIZATION_SOURCE_KEYS[1],
        lung_region_key: str = LOCALIZATION_SOURCE_KEYS[2],
        label_key: str = "label",
        has_localization_key: str = "has_localization",
        negatives_have_target: bool = True,
        target_key: str = "target",
        has_target_key: str = "has_target",
        region_key: str | None = "region",
        lung_key: str = "lung",
        extent_key: str = "extent",
        dilation: int = 5,
        sigma: float = 1.0,
        keep_sources: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.target = LocalizationTarget(map_size=map_size, dilation=dilation, sigma=sigma)
        self.mask_loader = LoadMask()
        self.boxes_key, self.mask_key, self.label_key = boxes_key, mask_key, label_key
        self.lung_region_key, self.lung_key, self.extent_key = lung_region_key, lung_key, extent_key
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

    def _load(self, d: Mapping[Hashable, Any], key: str) -> np.ndarray | None:
        path = d.get(key) or ""
        # MONAI's load_decathlon_datalist joins an empty entry to the dataset folder: a folder means "none"
        if not isinstance(path, (str, Path)) or not str(path) or Path(path).is_dir():
            return None
        if not Path(path).is_file():
            raise FileNotFoundError(f"{key} {path} does not exist")
        return self.mask_loader(path).numpy()[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image_shape = tuple(int(s) for s in d[key].shape[-2:])
            boxes = d.get(self.boxes_key) or []
            mask = self._load(d, self.mask_key)
            if mask is not None and tuple(mask.shape) != image_shape:
                raise ValueError(
                    f"mask {d[self.mask_key]} is {tuple(mask.shape)}, its image {image_shape}: they must match"
                )
            target, region = self.target(image_shape, boxes=boxes, mask=mask)
            d[self.target_key] = target
            d[self.has_target_key] = torch.tensor(self._has_target(d, bool(len(boxes)) or mask is not None))
            if self.region_key is not None:
                d[self.region_key] = region
            lungs = self._load(d, self.lung_region_key)
            lung_map = np.zeros(self.target.map_size, np.float32) if lungs is None else area_fraction(
                lungs, self.target.map_size)
            d[self.lung_key] = torch.from_numpy(lung_map[None])
            d[f"has_{self.lung_key}"] = torch.tensor(float(lungs is not None and lung_map.sum() > 0))
            # the expert extent (0-8; < 0 unknown) always exists, so every item collates
            extent = d.get(self.extent_key)
            d[self.extent_key] = torch.tensor(-1.0 if extent is None or extent == "" else float(extent))
        if not self.keep_sources:
            d.pop(self.boxes_key, None)
            d.pop(self.mask_key, None)
            d.pop(self.lung_region_key, None)
        return d
