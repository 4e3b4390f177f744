"""Reading the 8-bit PNG masks the converters use and derive (they write them with ``pneumonitor.publishing.write_png``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image



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
