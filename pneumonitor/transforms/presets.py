"""The two networks' preprocessing chains, shared by ``pneumonitor analyze``, the bundles and the Deploy app.

- DLNet (Sec. III-A): resize to ``image_size`` -> CLAHE -> gray to 3 channels -> ImageNet mean/std.
- LSNet (Sec. IV-A): resize to ``image_size`` -> the image's own mean/std (zero mean, unit variance).

The paper resizes to 448x448 without keeping the aspect ratio; so do we (the masks are resized back the same way).
Inputs are ``(1, H, W)`` radiographs in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.config import KeysCollection
from monai.transforms import Compose, NormalizeIntensity, NormalizeIntensityd, Resize, Resized

from pneumonitor.transforms.intensity import CLAHE, CLAHEd, ImageNetNormalize, ImageNetNormalized

__all__ = ["dlnet_preprocess", "dlnet_preprocessd", "lsnet_preprocess", "lsnet_preprocessd"]


def _size(image_size: Sequence[int] | int) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def dlnet_preprocess(
    image_size: Sequence[int] | int = 448, clahe_clip_limit: float = 0.01, clahe_tile_grid: Sequence[int] | int = 8
) -> Compose:
    """Array chain ``(1, H, W)`` in [0, 1] -> ``(3, *image_size)`` normalized for DLNet."""
    return Compose(
        [
            Resize(spatial_size=_size(image_size), mode="bilinear", anti_aliasing=True),
            CLAHE(clip_limit=clahe_clip_limit, tile_grid=clahe_tile_grid),
            ImageNetNormalize(),
        ]
    )


def dlnet_preprocessd(
    keys: KeysCollection = "image",
    image_size: Sequence[int] | int = 448,
    clahe_clip_limit: float = 0.01,
    clahe_tile_grid: Sequence[int] | int = 8,
) -> Compose:
    """Dictionary version of :func:`dlnet_preprocess` (for bundle configs)."""
    return Compose(
        [
            Resized(keys=keys, spatial_size=_size(image_size), mode="bilinear", anti_aliasing=True),
            CLAHEd(keys=keys, clip_limit=clahe_clip_limit, tile_grid=clahe_tile_grid),
            ImageNetNormalized(keys=keys),
        ]
    )


def lsnet_preprocess(image_size: Sequence[int] | int = 448) -> Compose:
    """Array chain ``(1, H, W)`` in [0, 1] -> ``(1, *image_size)`` standardized by the image's own mean and std."""
    return Compose(
        [Resize(spatial_size=_size(image_size), mode="bilinear", anti_aliasing=True), NormalizeIntensity()]
    )


def lsnet_preprocessd(keys: KeysCollection = "image", image_size: Sequence[int] | int = 448) -> Compose:
    """Dictionary version of :func:`lsnet_preprocess` (for bundle configs; resize masks separately, nearest)."""
    return Compose(
        [
            Resized(keys=keys, spatial_size=_size(image_size), mode="bilinear", anti_aliasing=True),
            NormalizeIntensityd(keys=keys),
        ]
    )
