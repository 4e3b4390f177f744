"""Reading and atomically writing the 8-bit PNG masks the converters use and derive."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pneumonitor.datasets.datalist import publish


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a [H, W] uint8 array (colour images are converted to luminance)."""
    with Image.open(path) as image:
        if image.mode not in ("L", "I;16", "I"):
            image = image.convert("L")
        return np.asarray(image)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    with Image.open(path) as image:
        return image.height, image.width


def write_png_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save a [H, W] uint8 (or bool -> 0/255) array as PNG through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(array.astype(np.uint8)).save(tmp, format="PNG")
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
