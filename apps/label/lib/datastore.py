"""Datastores of 2-D radiographs whose saved labels are validated and written atomically.

Every label that reaches the datastore (``PUT /datastore/label`` from OHIF or a script, or an infer result saved
with ``save_label``) is:

1. decoded from what the client sent: an 8-bit PNG, OHIF's raw ``label.bin`` (``rows * columns`` bytes,
   row-major, as cornerstone lays a single-frame labelmap out), or a NIfTI/NRRD (ITK convention, x = column);
2. checked: its size equals the radiograph's ``(rows, columns)`` and its values are in ``{0, 1, 2, 3}``
   (:mod:`lib.labels`); anything else is refused with HTTP 422 and a message, and nothing is written;
3. written as ``<labels>/<tag>/<image id>.png`` through a temp file in the same folder and ``os.replace``, and the
   datastore index (``datastore_v2.json``) is rewritten the same way, under the datastore's file lock.

So a reader never sees a partial label, and concurrent saves (OHIF tabs, scripts) lose nothing.

Label tags and new image ids become folder and file names, so they must be names (:data:`SAFE_NAME`), never paths
(HTTP 422 otherwise). ``PUT /datastore/image`` (MONAI Label's inherited ``add_image``) takes only a readable
PNG/JPEG/DICOM radiograph under a new id; it never overwrites an image (409). An upload larger than
:data:`MAX_UPLOAD_BYTES` is refused (413), and a refused upload's temp file is removed (the endpoint removes it only
after a success).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, LocalDatastore

from lib.infers.radiograph import resolve_radiograph_path
from lib.labels import KNOWN_VALUES
from pneumonitor.publishing import write_json, write_png

logger = logging.getLogger(__name__)

#: the radiographs a local datastore lists
IMAGE_EXTENSIONS = ("*.png", "*.jpg", "*.jpeg", "*.dcm")
#: what a label tag or a new image id may be: MONAI Label joins both into paths
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: the largest label or image upload accepted (a 4000 x 4000 px OHIF ``label.bin`` is 16 MB)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024


def checked_name(kind: str, value: Any) -> str:
    """``value`` when it is a plain name (:data:`SAFE_NAME`, not only dots); else HTTP 422 with the reason."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or set(value) == {"."}:
        raise HTTPException(
            status_code=422,
            detail=f"{kind} {str(value)[:80]!r} refused: 1-128 letters, digits, '_', '.' or '-' (a name, not a path)",
        )
    return value


def check_upload_size(path: str | os.PathLike) -> None:
    """HTTP 413 when an uploaded file is larger than :data:`MAX_UPLOAD_BYTES`."""
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise HTTPException(status_code=413, detail=f"upload of {size} bytes refused: at most {MAX_UPLOAD_BYTES}")


class InvalidLabel(HTTPException):
    """A label that does not fit its image; the endpoint answers 422 with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(status_code=422, detail=f"label refused: {reason}")


def radiograph_shape(image_path: str | os.PathLike) -> tuple[int, int]:
    """``(rows, columns)`` of a stored radiograph (PNG/JPEG/DICOM file or single-instance series folder)."""
    path = resolve_radiograph_path(image_path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as image:
            return image.height, image.width
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


def decode_label(label_file: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Read an uploaded label into ``uint8 (rows, columns)`` and validate it against the image ``shape``.

    Raises:
        InvalidLabel: unreadable file, wrong size, non-integer or unknown values.
    """
    path = Path(label_file)
    name = path.name.lower()
    try:
        if name.endswith(".bin"):
            raw = np.fromfile(path, dtype=np.uint8)
            if raw.size != shape[0] * shape[1]:
                raise InvalidLabel(f"{raw.size} bytes for an image of {shape[0]}x{shape[1]} pixels")
            array = raw.reshape(shape)
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                if image.mode not in ("L", "P", "I", "I;16", "1"):
                    raise InvalidLabel(f"a label PNG must be single-channel, got mode {image.mode}")
                array = np.asarray(image)
        elif name.endswith((".nii", ".nii.gz", ".nrrd", ".seg.nrrd")):
            import SimpleITK as sitk

            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            while array.ndim > 2 and array.shape[0] == 1:
                array = array[0]
        else:
            raise InvalidLabel(f"unsupported label file type {path.name!r} (PNG, .bin, NIfTI or NRRD)")
    except InvalidLabel:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder error means the upload is not a label
        raise InvalidLabel(f"could not read {path.name}: {exc}") from exc
    if array.ndim != 2:
        raise InvalidLabel(f"expected a 2-D label, got shape {array.shape}")
    if tuple(array.shape) != tuple(shape):
        raise InvalidLabel(f"label is {array.shape[0]}x{array.shape[1]}, the image is {shape[0]}x{shape[1]}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.equal(np.mod(array, 1), 0)):
        raise InvalidLabel("label values must be integers")
    values = {int(v) for v in np.unique(array)}
    unknown = sorted(values - KNOWN_VALUES)
    if unknown:
        raise InvalidLabel(f"unknown label values {unknown[:10]}; known: {sorted(KNOWN_VALUES)}")
    return array.astype(np.uint8)


def write_png_atomically(array: np.ndarray, destination: str | os.PathLike) -> None:
    """A label PNG, atomically and on disk before the index names it (:func:`pneumonitor.publishing.write_png`)."""
    write_png(destination, array, durable=True)


class ValidatedLabelsMixin:
    """``save_label`` and the index writer of a :class:`LocalDatastore`, made validating and atomic."""

    def _image_shape(self, image_id: str) -> tuple[int, int]:
        return radiograph_shape(self.get_image_uri(image_id))

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            return self._save_label(image_id, label_filename, label_tag, label_info)
        except Exception:
            Path(label_filename).unlink(missing_ok=True)  # the endpoint removes its temp file only after a success
            raise

    def _save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        checked_name("label tag", label_tag)
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise HTTPException(status_code=404, detail=f"image {image_id} is not in the datastore")
        check_upload_size(label_filename)
        label = decode_label(label_filename, self._image_shape(image_id))
        name = self._filename(image_id, ".png")
        destination = Path(self._datastore.label_path(label_tag)) / name
        info = dict(label_info or {})
        info.update(ts=int(time.time()), name=name, values=sorted(int(v) for v in np.unique(label)))
        with FileLock(self._lock_file):
            write_png_atomically(label, destination)
            obj.labels[label_tag] = DataModel(info=info, ext=".png")
            self._update_datastore_file(lock=False)
        logger.info("saved label %s (%s) %s", image_id, label_tag, info["values"])
        return image_id

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """``PUT /datastore/image``: a readable radiograph under a new, plain id; refusals remove the upload."""
        from pneumonitor.reading import UnsupportedInput, read_radiograph

        try:
            checked_name("image id", image_id)
            suffix = "".join(Path(image_filename).suffixes).lower()
            if f"*{suffix}" not in IMAGE_EXTENSIONS:
                raise HTTPException(status_code=422, detail=f"image refused: {suffix or 'no extension'} is not one of "
                                    f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)}")
            if image_id in self._datastore.objects:
                raise HTTPException(status_code=409, detail=f"image {image_id} exists; it is not overwritten")
            check_upload_size(image_filename)
            try:
                read_radiograph(image_filename)
            except UnsupportedInput as exc:
                raise HTTPException(status_code=422, detail=f"image refused: {exc}") from exc
            return super().add_image(image_id, image_filename, image_info)
        except Exception:
            Path(image_filename).unlink(missing_ok=True)
            raise

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            self._ignore_event_config = True
            path = write_json(self._datastore_config_path, self._datastore.model_dump(exclude={"base_path"}))
            self._config_ts = os.stat(path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()


class RadiographDatastore(ValidatedLabelsMixin, LocalDatastore):
    """A folder of PNG/JPEG/DICOM radiographs; labels in ``labels/final`` (annotators) and ``labels/original``."""

    def __init__(self, path: str | os.PathLike, auto_reload: bool = True, read_only: bool = False) -> None:
        super().__init__(
            str(path), extensions=list(IMAGE_EXTENSIONS), auto_reload=auto_reload, read_only=read_only
        )
