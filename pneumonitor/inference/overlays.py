"""Overlays a reader looks at: the radiograph with lung contours and the pneumonia region.

Colours: patient's right lung contour green, left lung contour blue, pneumonia filled red at 40 % opacity.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

__all__ = ["render_overlay", "RIGHT_LUNG_COLOR", "LEFT_LUNG_COLOR", "PNEUMONIA_COLOR"]

RIGHT_LUNG_COLOR = (0, 220, 0)
LEFT_LUNG_COLOR = (40, 120, 255)
PNEUMONIA_COLOR = (255, 0, 0)
PNEUMONIA_ALPHA = 0.4


def render_overlay(
    pixels: np.ndarray,
    right_lung: np.ndarray,
    left_lung: np.ndarray,
    pneumonia: np.ndarray,
    caption: str | None = None,
) -> np.ndarray:
    """Draw the overlay.

    Args:
        pixels: ``(H, W)`` radiograph in [0, 1] (MONOCHROME2).
        right_lung, left_lung, pneumonia: ``(H, W)`` masks.
        caption: optional text drawn in the top-left corner (e.g. the score).
    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    gray = (np.clip(np.asarray(pixels, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    pneumonia = np.asarray(pneumonia, dtype=bool)
    rgb[pneumonia] = (1 - PNEUMONIA_ALPHA) * rgb[pneumonia] + PNEUMONIA_ALPHA * np.array(PNEUMONIA_COLOR, np.float32)
    thickness = max(1, round(min(gray.shape) / 400))
    for mask, color in ((right_lung, RIGHT_LUNG_COLOR), (left_lung, LEFT_LUNG_COLOR)):
        edge = find_boundaries(np.asarray(mask, dtype=bool), mode="inner")
        if thickness > 1:
            edge = binary_dilation(edge, structure=disk(thickness - 1).astype(bool))
        rgb[edge] = color
    out = rgb.clip(0, 255).astype(np.uint8)
    if caption:
        from PIL import Image, ImageDraw, ImageFont

        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        size = max(10, min(gray.shape) // 28)
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1 has no sized default font
            font = ImageFont.load_default()
        draw.text((size // 2, size // 2), caption, fill=(255, 255, 0), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        out = np.asarray(image)
    return out
