"""LSNet-Aug (Amer et al. 2020, Sec. IV-A): the augmentations that make the lung segmentation robust to disease.

The paper adds to the classic zoom / translation / rotation / horizontal flip:

- gamma correction (other X-ray sources): MONAI's ``RandAdjustContrastd``;
- blob implanting (tubes, devices, dense infection): :class:`RandBlobImplantd`, bright or dark soft discs and
  tube-like strokes drawn over the image, the lung mask unchanged;
- synthetic abnormal lungs (the paper used MUNIT-synthesized radiographs, which cannot be reproduced here):
  :class:`RandLungOpacityd`, smooth textured patches inside the lung mask that pull the lung intensity towards the
  soft-tissue level, as ground glass (partial) and consolidation (near-complete) do; the mask is unchanged, because
  the lung still occupies the same place.

DLNet (:func:`dlnet_augmentd`, our addition; the paper trained DLNet on RSNA, one source): horizontal flip of the image
and its localization target, gamma, blur, resolution loss, noise and histogram shifts. They exist to hide the
acquisition source (film digitiser vs. digital detector, resolution, contrast curve), which is confounded with the
label in the training mix (see :mod:`pneumonitor.datasets.mix`); they touch no geometry beyond the flip, so the
stride-8 target map stays aligned.

All transforms take channel-first ``(1, H, W)`` images in [0, 1] (MONOCHROME2: lungs dark), i.e. they run before the
per-image standardization. Each is a MONAI ``RandomizableTransform`` with a probability ``prob``.
:func:`lsnet_augmentd` assembles the whole chain (the bundle's ``train.json`` lists the same transforms one by one).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandSimulateLowResolutiond,
    ScaleIntensityRanged,
    RandFlipd,
    RandomizableTransform,
    RandRotated,
    RandZoomd,
)
from monai.utils import convert_to_dst_type
from scipy import ndimage

__all__ = ["RandBlobImplantd", "RandLungOpacityd", "dlnet_augmentd", "lsnet_augmentd"]


def _as_numpy(img: Any) -> np.ndarray:
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)


def _blend(image: np.ndarray, layer: np.ndarray, value: np.ndarray | float) -> np.ndarray:
    """``image * (1 - layer) + value * layer`` with ``layer`` in [0, 1] (alpha compositing)."""
    return image * (1.0 - layer) + value * layer


class _RandLayerBlendd(RandomizableTransform, MapTransform):
    """With probability ``prob``, one alpha layer drawn per item (:meth:`_draw_layer`) is composited into the image
    of every key (float32, the input's type); what the implant transforms below share."""

    backend = [np.ndarray.__name__]

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)

    @abstractmethod
    def _draw_layer(self, d: dict[Hashable, Any]) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        """``(alpha (H, W) in [0, 1], image -> the value it is pulled to)`` for this item, or ``None`` to leave it."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        layer = self._draw_layer(d) if self._do_transform else None
        if layer is None:
            return d
        alpha, value_of = layer
        for key in self.key_iterator(d):
            image = _as_numpy(d[key]).astype(np.float32)
            out = _blend(image, alpha[None], value_of(image)).astype(np.float32)
            d[key] = convert_to_dst_type(out, d[key], dtype=torch.float32)[0]
        return d


class RandBlobImplantd(_RandLayerBlendd):
    """Implant soft discs (bright or dark) and tube-like strokes into the image; masks are left unchanged.

    Args:
        keys: image key(s), ``(1, H, W)`` in [0, 1].
        prob: probability of augmenting an item.
        num_blobs: (min, max) number of discs.
        blob_radius: (min, max) disc radius as a fraction of the image's shorter side.
        num_tubes: (min, max) number of strokes (quadratic Bezier curves).
        tube_width: (min, max) stroke half-width in pixels at 448 px (scaled with the image).
        opacity: (min, max) alpha of an implant (1 = fully replaces the pixels).
        dark_fraction: fraction of discs that are dark (air-like) rather than bright (device/consolidation-like).
        edge_sigma: Gaussian softening of the implant edges in pixels at 448 px.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 0.3,
        num_blobs: Sequence[int] = (1, 4),
        blob_radius: Sequence[float] = (0.01, 0.06),
        num_tubes: Sequence[int] = (0, 2),
        tube_width: Sequence[float] = (1.5, 4.0),
        opacity: Sequence[float] = (0.5, 1.0),
        dark_fraction: float = 0.3,
        edge_sigma: float = 1.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.num_blobs, self.blob_radius, self.num_tubes = tuple(num_blobs), tuple(blob_radius), tuple(num_tubes)
        self.tube_width, self.opacity = tuple(tube_width), tuple(opacity)
        self.dark_fraction, self.edge_sigma = float(dark_fraction), float(edge_sigma)

    def _draw(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(alpha layer, value layer) for one image of ``shape``."""
        height, width = shape
        scale = min(shape) / 448.0
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        alpha = np.zeros(shape, dtype=np.float32)
        value = np.zeros(shape, dtype=np.float32)
        for _ in range(int(self.R.randint(self.num_blobs[0], self.num_blobs[1] + 1))):
            radius = self.R.uniform(*self.blob_radius) * min(shape)
            cy, cx = self.R.uniform(0, height), self.R.uniform(0, width)
            disc = ((rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2).astype(np.float32)
            level = self.R.uniform(0.0, 0.15) if self.R.rand() < self.dark_fraction else self.R.uniform(0.8, 1.0)
            layer = disc * self.R.uniform(*self.opacity)
            value = np.where(layer > alpha, level, value)
            alpha = np.maximum(alpha, layer)
        for _ in range(int(self.R.randint(self.num_tubes[0], self.num_tubes[1] + 1))):
            points = self.R.uniform(0, 1, size=(3, 2)) * np.array([height, width])
            t = np.linspace(0.0, 1.0, 4 * (height + width))[:, None]
            curve = (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]
            line = np.zeros(shape, dtype=bool)
            r = np.clip(np.round(curve[:, 0]).astype(int), 0, height - 1)
            c = np.clip(np.round(curve[:, 1]).astype(int), 0, width - 1)
            line[r, c] = True
            half_width = self.R.uniform(*self.tube_width) * scale
            stroke = (ndimage.distance_transform_edt(~line) <= half_width).astype(np.float32)
            layer = stroke * self.R.uniform(*self.opacity)
            value = np.where(layer > alpha, self.R.uniform(0.85, 1.0), value)
            alpha = np.maximum(alpha, layer)
        if self.edge_sigma > 0:
            alpha = ndimage.gaussian_filter(alpha, sigma=self.edge_sigma * scale)
        return np.clip(alpha, 0.0, 1.0), value

    def _draw_layer(self, d: dict[Hashable, Any]) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        first = next(self.key_iterator(d), None)
        if first is None:
            return None
        alpha, value = self._draw(tuple(int(s) for s in d[first].shape[-2:]))
        return alpha, lambda image: value[None]


class RandLungOpacityd(_RandLayerBlendd):
    """Synthetic abnormal lungs: smooth, textured opacities implanted inside the lung mask (mask unchanged).

    A patch field is low-pass filtered noise (correlation length ``scale`` of the image side), kept where it exceeds
    its ``1 - coverage`` quantile inside the lungs, softened, and modulated by finer noise (``texture``) so that the
    opacity is mottled rather than flat. The lung pixels are then pulled towards the soft-tissue level (the
    ``tissue_percentile`` of the image's intensities) by ``strength``: about 0.2-0.5 looks like ground glass, 0.6-0.9
    like consolidation.

    Args:
        keys: image key(s), ``(1, H, W)`` in [0, 1].
        mask_key: the lung mask, ``(1, H, W)`` with 1 = lung (0 background; other values such as the -1 ignore label
            are not lung).
        prob: probability of augmenting an item.
        coverage: (min, max) fraction of the lung area covered.
        strength: (min, max) blend towards the soft-tissue level.
        scale: (min, max) correlation length of the patches as a fraction of the image's shorter side.
        texture: amplitude of the fine-grained modulation (0 = flat patches).
        tissue_percentile: percentile of the image taken as the soft-tissue (opacity) level.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mask_key: str = "label",
        prob: float = 0.3,
        coverage: Sequence[float] = (0.1, 0.6),
        strength: Sequence[float] = (0.2, 0.9),
        scale: Sequence[float] = (0.03, 0.1),
        texture: float = 0.3,
        tissue_percentile: float = 90.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.mask_key = mask_key
        self.coverage, self.strength, self.scale = tuple(coverage), tuple(strength), tuple(scale)
        self.texture, self.tissue_percentile = float(texture), float(tissue_percentile)

    def _layer(self, lungs: np.ndarray) -> np.ndarray:
        """Opacity alpha ``(H, W)`` in [0, 1], zero outside ``lungs``."""
        side = min(lungs.shape)
        field = ndimage.gaussian_filter(self.R.standard_normal(lungs.shape), sigma=self.R.uniform(*self.scale) * side)
        cutoff = np.quantile(field[lungs], 1.0 - self.R.uniform(*self.coverage))
        patch = ndimage.gaussian_filter((field > cutoff).astype(np.float32), sigma=0.01 * side + 0.5)
        if self.texture > 0:
            fine = ndimage.gaussian_filter(self.R.standard_normal(lungs.shape), sigma=0.005 * side + 0.5)
            fine = fine / (np.abs(fine).max() + 1e-6)
            patch = patch * np.clip(1.0 + self.texture * fine, 0.0, None)
        soft_lungs = ndimage.gaussian_filter(lungs.astype(np.float32), sigma=0.005 * side + 0.5)
        return np.clip(patch * soft_lungs * self.R.uniform(*self.strength), 0.0, 1.0).astype(np.float32)

    def _draw_layer(self, d: dict[Hashable, Any]) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        if self.mask_key not in d:
            raise KeyError(f"RandLungOpacityd needs the lung mask under {self.mask_key!r}")
        lungs = _as_numpy(d[self.mask_key]).reshape(d[self.mask_key].shape[-2:]) == 1
        if lungs.sum() < 16:
            return None  # no lungs to fill: leave the item as it is
        # the lung pixels are pulled towards the image's soft-tissue level (never darkened)
        return self._layer(lungs), lambda image: np.maximum(image, np.percentile(image, self.tissue_percentile))


def lsnet_augmentd(
    image_key: str = "image",
    mask_key: str = "label",
    zoom_prob: float = 0.3,
    zoom_range: Sequence[float] = (0.9, 1.1),
    translate_prob: float = 0.3,
    translate_fraction: float = 0.1,
    rotate_prob: float = 0.3,
    rotate_degrees: float = 10.0,
    flip_prob: float = 0.5,
    gamma_prob: float = 0.3,
    gamma_range: Sequence[float] = (0.6, 1.6),
    blob_prob: float = 0.3,
    opacity_prob: float = 0.3,
    image_size: Sequence[int] | int = 448,
) -> Compose:
    """The LSNet-Aug chain for ``(1, H, W)`` images in [0, 1] with their lung masks.

    Intensity transforms first (the opacities need the unmoved mask), then the geometric ones (image bilinear, mask
    nearest so that labels, including an ignore label, stay exact). The horizontal flip swaps nothing: the mask
    holds both lungs with one label.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    keys = [image_key, mask_key]
    return Compose(
        [
            RandLungOpacityd(keys=image_key, mask_key=mask_key, prob=opacity_prob),
            RandBlobImplantd(keys=image_key, prob=blob_prob),
            RandAdjustContrastd(keys=image_key, prob=gamma_prob, gamma=tuple(gamma_range)),
            RandZoomd(keys=keys, prob=zoom_prob, min_zoom=zoom_range[0], max_zoom=zoom_range[1],
                      mode=["bilinear", "nearest"], keep_size=True),
            RandAffined(keys=keys, prob=translate_prob, mode=["bilinear", "nearest"], padding_mode="zeros",
                        translate_range=[translate_fraction * s for s in size]),
            RandRotated(keys=keys, prob=rotate_prob, range_x=np.deg2rad(rotate_degrees),
                        mode=["bilinear", "nearest"], padding_mode="zeros"),
            RandFlipd(keys=keys, prob=flip_prob, spatial_axis=1),
        ]
    )


def dlnet_augmentd(
    image_key: str = "image",
    target_key: str = "target",
    flip_prob: float = 0.5,
    flip_keys: Sequence[str] = (),
    gamma_prob: float = 0.5,
    gamma_range: Sequence[float] = (0.6, 1.6),
    blur_prob: float = 0.25,
    blur_sigma: Sequence[float] = (0.3, 1.2),
    lowres_prob: float = 0.25,
    lowres_zoom: Sequence[float] = (0.4, 0.9),
    noise_prob: float = 0.25,
    noise_std: float = 0.02,
    histogram_prob: float = 0.2,
    histogram_points: Sequence[int] = (5, 10),
) -> Compose:
    """Source-hiding augmentations for DLNet: ``(1, H, W)`` image in [0, 1] (already resized) and ``(1, h, w)`` target.

    Order: flip (image, target and ``flip_keys``, e.g. the lung map, together), gamma, Gaussian blur (sigma in pixels of the resized image),
    low resolution (area down-sampling by a random factor in ``lowres_zoom``, bilinear back), Gaussian noise (std
    in [0, 1] intensity units), histogram shift, then a clip back to [0, 1] for CLAHE.
    """
    return Compose(
        [
            RandFlipd(keys=[image_key, target_key, *flip_keys], prob=flip_prob, spatial_axis=1, allow_missing_keys=True),
            RandAdjustContrastd(keys=image_key, prob=gamma_prob, gamma=tuple(gamma_range)),
            RandGaussianSmoothd(keys=image_key, prob=blur_prob, sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma)),
            RandSimulateLowResolutiond(keys=image_key, prob=lowres_prob, zoom_range=tuple(lowres_zoom),
                                       downsample_mode="area", upsample_mode="bilinear"),
            RandGaussianNoised(keys=image_key, prob=noise_prob, std=noise_std),
            RandHistogramShiftd(keys=image_key, prob=histogram_prob, num_control_points=tuple(histogram_points)),
            ScaleIntensityRanged(keys=image_key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
