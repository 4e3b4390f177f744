"""Loading transforms: radiographs through :mod:`pneumonitor.reading` and mask images, both as ``(1, H, W)``.

Images and masks are both returned row-major ``(rows, columns)`` so that they stay aligned; MONAI's PIL reader would
transpose bitmaps, which is why masks are not read with ``LoadImage`` here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Transform

from pneumonitor.reading import read_radiograph
from pneumonitor.transforms.dictionary import ArrayTransformd

__all__ = ["LoadRadiograph", "LoadRadiographd", "LoadMask", "LoadMaskd", "collatable_meta"]


class LoadRadiograph(Transform):
    """Path -> ``MetaTensor`` ``(1, H, W)`` float32 in [0, 1], MONOCHROME2.

    The meta dict holds the radiograph's identity attributes (``pneumonitor.reading.IDENTITY_ATTRIBUTES``),
    ``filename_or_obj``, ``spatial_shape`` and ``pixel_spacing`` (mm, NaN when unknown), and the reader's notes.
    Raises ``pneumonitor.reading.UnsupportedInput`` for unusable inputs.

    Every radiograph gets the same keys with values of one shape, whatever its format: MONAI's collate builds a
    batch's meta key by key, so a key missing in one item, or lists of different lengths (one DICOM has a
    PatientOrientation, the next none), made training fail on mixed PACS data. Hence: ``None`` -> ``""``, the
    reader's sequences as one string (``warnings`` joined by "; ", ``patient_orientation`` and
    ``orientation_flips`` in DICOM's multi-value form ``L\\F``), ``pixel_spacing`` always two floats.
    """

    def __call__(self, path: str | Path) -> MetaTensor:
        radiograph = read_radiograph(path)
        return MetaTensor(torch.from_numpy(radiograph.pixels[None]), meta=collatable_meta(radiograph))


#: the reader's list-valued notes, each stored as one string (see :class:`LoadRadiograph`), with its separator
SEQUENCE_META = {"warnings": "; ", "patient_orientation": "\\", "orientation_flips": "\\"}


def collatable_meta(radiograph) -> dict:
    """The meta dict of :class:`LoadRadiograph`: the same keys and value shapes for every radiograph."""
    meta = {key: ("" if value is None else value) for key, value in radiograph.meta.items()
            if key not in SEQUENCE_META and key != "pixel_spacing"}
    for key, separator in SEQUENCE_META.items():
        meta[key] = separator.join(str(item) for item in radiograph.meta.get(key) or ())
    spacing = radiograph.meta.get("pixel_spacing")
    meta["pixel_spacing"] = np.asarray(spacing if spacing else (np.nan, np.nan), dtype=np.float64)
    meta.update(filename_or_obj=str(radiograph.source), spatial_shape=np.asarray(radiograph.shape))
    return meta


class LoadRadiographd(ArrayTransformd):
    """Dictionary version of :class:`LoadRadiograph`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, LoadRadiograph(), allow_missing_keys)


class LoadMask(Transform):
    """Mask image path -> ``MetaTensor`` ``(1, H, W)`` float32 with values 0/1 and, optionally, ``ignore_label``.

    Args:
        threshold: 8-bit values above it are foreground (masks here are 0/255).
        ignore_value: an 8-bit value meaning "unknown" (the V7 lung masks use 127), mapped to ``ignore_label``.
        ignore_label: the value ignored pixels get in the output (losses and metrics exclude it).
    """

    def __init__(self, threshold: int = 127, ignore_value: int | None = None, ignore_label: float = -1.0) -> None:
        self.threshold = threshold
        self.ignore_value = ignore_value
        self.ignore_label = float(ignore_label)

    def __call__(self, path: str | Path) -> MetaTensor:
        from PIL import Image

        with Image.open(path) as img:
            array = np.asarray(img.convert("L"))
        mask = (array > self.threshold).astype(np.float32)
        if self.ignore_value is not None:
            mask[array == self.ignore_value] = self.ignore_label
        return MetaTensor(torch.from_numpy(mask[None]), meta={"filename_or_obj": str(path)})


class LoadMaskd(ArrayTransformd):
    """Dictionary version of :class:`LoadMask`."""

    def __init__(self, keys: KeysCollection, threshold: int = 127, ignore_value: int | None = None,
                 ignore_label: float = -1.0, allow_missing_keys: bool = False) -> None:
        loader = LoadMask(threshold=threshold, ignore_value=ignore_value, ignore_label=ignore_label)
        super().__init__(keys, loader, allow_missing_keys)
