"""Intensity transforms of the paper's preprocessing (Sec. III-A, IV-A).

All array transforms take channel-first images ``(C, H, W)`` (numpy or torch, MetaTensor kept) with float values;
radiographs enter in ``[0, 1]`` (see :mod:`pneumonitor.reading`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import convert_to_dst_type

from pneumonitor.transforms.dictionary import ArrayTransformd

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLAHE",
    "CLAHEd",
    "ImageNetNormalize",
    "ImageNetNormalized",
]

#: ImageNet channel statistics (RGB) used by the paper's normalization; images are in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CLAHE(Transform):
    """Contrast Limited Adaptive Histogram Equalization per channel (scikit-image ``equalize_adapthist``).

    The paper applies CLAHE without giving its parameters; defaults here are OpenCV's customary 8x8 tile grid and
    scikit-image's default normalized clip limit 0.01 (fraction of the tile's pixels per histogram bin).

    Args:
        clip_limit: normalized clip limit in (0, 1]; higher = more contrast.
        tile_grid: number of tiles along (rows, columns); the kernel is ``image_size // tile_grid``.
        nbins: histogram bins.

    Input ``(C, H, W)`` in [0, 1] (values outside are clipped); output same shape, float32 in [0, 1].
    """

    def __init__(self, clip_limit: float = 0.01, tile_grid: Sequence[int] | int = (8, 8), nbins: int = 256) -> None:
        if not 0 < clip_limit <= 1:
            raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit}")
        self.clip_limit = float(clip_limit)
        self.tile_grid = (tile_grid, tile_grid) if isinstance(tile_grid, int) else tuple(int(t) for t in tile_grid)
        self.nbins = int(nbins)

    def __call__(self, img):
        from skimage.exposure import equalize_adapthist

        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        array = np.clip(array.astype(np.float64), 0.0, 1.0)
        kernel = [max(1, s // t) for s, t in zip(array.shape[-2:], self.tile_grid)]
        out = np.stack(
            [equalize_adapthist(ch, kernel_size=kernel, clip_limit=self.clip_limit, nbins=self.nbins) for ch in array]
        ).astype(np.float32)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class CLAHEd(ArrayTransformd):
    """Dictionary version of :class:`CLAHE`."""

    def __init__(self, keys: KeysCollection, clip_limit: float = 0.01, tile_grid: Sequence[int] | int = (8, 8),
                 nbins: int = 256, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, CLAHE(clip_limit=clip_limit, tile_grid=tile_grid, nbins=nbins), allow_missing_keys)


class ImageNetNormalize(Transform):
    """Gray to 3 channels by replication, then ``(x - mean) / std`` per channel with ImageNet statistics.

    Input ``(1, H, W)`` (or already ``(3, H, W)``) in [0, 1]; output ``(3, H, W)`` float32, roughly zero-mean.
    Replication keeps an ImageNet-pretrained backbone's first convolution usable as is.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != len(std):
            raise ValueError("mean and std must have the same length")
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img):
        tensor = torch.as_tensor(img, dtype=torch.float32)
        channels = self.mean.shape[0]
        if tensor.shape[0] == 1:
            tensor = tensor.expand(channels, *tensor.shape[1:])
        elif tensor.shape[0] != channels:
            raise ValueError(f"expected 1 or {channels} channels, got shape {tuple(tensor.shape)}")
        out = (tensor - self.mean.to(tensor.device)) / self.std.to(tensor.device)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
        return out if isinstance(img, torch.Tensor) else out.numpy()


class ImageNetNormalized(ArrayTransformd):
    """Dictionary version of :class:`ImageNetNormalize`."""

    def __init__(self, keys: KeysCollection, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, ImageNetNormalize(mean=mean, std=std), allow_missing_keys)
