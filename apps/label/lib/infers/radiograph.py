"""What both infer tasks share: reading a radiograph, loading a bundle's network, writing the label map.

MONAI Label hands an infer task a path: a PNG/JPEG/DICOM file of the local datastore, or, for the DICOMweb
datastore, the folder that holds the downloaded single-instance DX/CR series. Both are read with
:func:`pneumonitor.reading.read_radiograph` (VOI LUT, MONOCHROME1 inversion), never with a generic image reader.

Label files written here (``result_extension`` of the request, ``.png`` by default):

- ``.png``: 8-bit ``(rows, columns)`` label map (values of :mod:`lib.labels`), what the local datastore stores;
- ``.nrrd`` / ``.nii.gz``: the same map as a 3-D ``(columns, rows, 1)`` ITK image (x = column), what OHIF's MONAI
  Label panel asks for (``.nrrd``) and lays over the single-frame series, slice by slice.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from pneumonitor.reading import Radiograph, UnsupportedInput, read_radiograph, to_stored_grid
from pneumonitor.networks import LoadedNetwork, load_bundle

logger = logging.getLogger(__name__)

LABEL_EXTENSIONS = (".png", ".nrrd", ".nii.gz", ".nii")


def resolve_radiograph_path(path: str | os.PathLike) -> Path:
    """A file as is; a folder (a downloaded DICOM series) -> its one instance.

    Raises:
        UnsupportedInput: an empty folder, or a series of several instances (not a single radiograph).
    """
    path = Path(path)
    if not path.is_dir():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UnsupportedInput(f"the series folder {path} is empty")
    if len(files) > 1:
        raise UnsupportedInput(f"the series {path.name} has {len(files)} instances; a radiograph series has one")
    return files[0]


class ReadRadiographd(MapTransform):
    """``data[key]`` path -> ``(1, H, W)`` ``MetaTensor`` in [0, 1]; the :class:`Radiograph` goes to ``data["radiograph"]``."""

    def __init__(self, keys: str = "image") -> None:
        super().__init__(keys)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            radiograph = read_radiograph(resolve_radiograph_path(d[key]))
            d["radiograph"] = radiograph
            d[key] = MetaTensor(
                torch.from_numpy(radiograph.pixels[None]),
                meta={"filename_or_obj": str(radiograph.source), "spatial_shape": np.asarray(radiograph.shape)},
            )
        return d


class NetworkCache:
    """Loads a bundle's network with :func:`pneumonitor.networks.load_bundle` and reloads it when ``model.pt`` changes.

    A trainer that promotes a better checkpoint replaces ``models/model.pt`` atomically; the next request then
    serves the new weights (the modification time is part of the cache key).
    """

    def __init__(self, bundle: str | os.PathLike, kind: str) -> None:
        self.bundle = Path(bundle)
        self.kind = kind
        self._cache: dict[tuple[str, float], LoadedNetwork] = {}
        self._lock = threading.Lock()

    @property
    def weights(self) -> Path:
        return self.bundle / "models" / "model.pt"

    def get(self, device: str | torch.device = "cpu") -> LoadedNetwork:
        mtime = self.weights.stat().st_mtime
        key = (str(device), mtime)
        with self._lock:
            if key not in self._cache:
                logger.info("loading %s from %s on %s", self.kind, self.bundle, device)
                self._cache = {k: v for k, v in self._cache.items() if k[0] != str(device)}
                self._cache[key] = load_bundle(self.bundle, device, kind=self.kind)
            return self._cache[key]


def write_label(label: np.ndarray, radiograph: Radiograph, extension: str = ".png") -> str:
    """Write a ``uint8 (rows, columns)`` label map to a temp file of the given extension; returns its path."""
    import SimpleITK as sitk
    from PIL import Image

    extension = extension if extension.startswith(".") else f".{extension}"
    if extension not in LABEL_EXTENSIONS:
        raise ValueError(f"result_extension must be one of {LABEL_EXTENSIONS}, got {extension!r}")
    handle, path = tempfile.mkstemp(suffix=extension, prefix="pneumonitor-label-")
    os.close(handle)
    # on the stored pixels, where viewers draw it: pneumonitor.reading flips images whose PatientOrientation says so
    label = np.ascontiguousarray(to_stored_grid(label, radiograph.meta), dtype=np.uint8)
    if extension == ".png":
        Image.fromarray(label).save(path, format="PNG")
        return path
    image = sitk.GetImageFromArray(label[None])  # (1, rows, columns) -> ITK size (columns, rows, 1)
    spacing = radiograph.meta.get("pixel_spacing")
    if spacing:
        image.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    sitk.WriteImage(image, path, useCompression=extension != ".nrrd")
    return path
