"""MONAI transforms of pneumonitor: loading, the paper's intensity preprocessing and the per-network presets.

Training-only transforms (localization targets, LSNet-Aug augmentations) live in their own modules of this package.
"""

from pneumonitor.transforms.intensity import (
    CLAHE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLAHEd,
    ImageNetNormalize,
    ImageNetNormalized,
)
from pneumonitor.transforms.loading import LoadMask, LoadMaskd, LoadRadiograph, LoadRadiographd
from pneumonitor.transforms.augment import RandBlobImplantd, RandLungOpacityd, dlnet_augmentd, lsnet_augmentd
from pneumonitor.transforms.targets import (
    LocalizationTarget,
    LocalizationTargetd,
    area_fraction,
    boxes_to_image,
    boxes_to_map,
    soften_target,
)
from pneumonitor.transforms.presets import ResizeRadiograph, ResizeRadiographd, dlnet_preprocess, dlnet_preprocessd, lsnet_preprocess, lsnet_preprocessd

__all__ = [
    "CLAHE",
    "CLAHEd",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNetNormalize",
    "ImageNetNormalized",
    "LoadMask",
    "LoadMaskd",
    "LoadRadiograph",
    "LoadRadiographd",
    "LocalizationTarget",
    "LocalizationTargetd",
    "RandBlobImplantd",
    "RandLungOpacityd",
    "area_fraction",
    "boxes_to_image",
    "boxes_to_map",
    "dlnet_augmentd",
    "lsnet_augmentd",
    "soften_target",
    "ResizeRadiograph",
    "ResizeRadiographd",
    "dlnet_preprocess",
    "dlnet_preprocessd",
    "lsnet_preprocess",
    "lsnet_preprocessd",
]
