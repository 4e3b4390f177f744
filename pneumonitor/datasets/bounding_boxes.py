"""Bounding boxes from binary masks (radiologist pneumonia masks, thresholded heatmaps).

Box convention, used everywhere in this package: ``[x0, y0, x1, y1]`` in pixels of the stored image, with the
end exclusive (``x1 = last column + 1``), so a box's width is ``x1 - x0``. RSNA's ``x, y, width, height`` maps to
``[x, y, x + width, y + height]``.

Merging rule: regions closer than a few pixels are one finding (radiologists paint ground glass in strokes, leaving
thin gaps). The mask is binary-closed with a disk of radius ``closing_radius`` pixels, connected components of the
closed mask are labelled (8-connectivity), and each component gives the tight box of the ORIGINAL mask pixels it
contains (closing only decides which pixels belong together; it never enlarges a box). Components with fewer than
``min_area`` original pixels are dropped (speckle).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import disk


def boxes_from_mask(mask: np.ndarray, closing_radius: int = 5, min_area: int = 1) -> list[list[int]]:
    """Tight boxes of the connected regions of a binary mask, after merging regions closer than ``2*closing_radius``.

    Args:
        mask: [H, W] array; nonzero = region.
        closing_radius: radius in pixels of the disk used to close gaps before labelling; 0 = no merging.
        min_area: regions with fewer original pixels are dropped.

    Returns:
        ``[[x0, y0, x1, y1], ...]`` (ints, end-exclusive), sorted by (y0, x0).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    binary = mask > 0
    if not binary.any():
        return []
    if closing_radius > 0:
        # pad so that closing does not treat the border as background (which would erode regions touching it)
        pad = closing_radius + 1
        padded = np.pad(binary, pad)
        closed = ndimage.binary_closing(padded, structure=disk(closing_radius))[pad:-pad, pad:-pad] | binary
    else:
        closed = binary
    labels, count = ndimage.label(closed, structure=np.ones((3, 3), dtype=bool))
    original_labels = np.where(binary, labels, 0)
    boxes: list[list[int]] = []
    for index, slices in enumerate(ndimage.find_objects(original_labels), start=1):
        if slices is None:
            continue
        area = int((original_labels[slices] == index).sum())
        if area < min_area:
            continue
        rows, cols = slices
        boxes.append([int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)])
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def boxes_to_mask(boxes: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """Binary [H, W] mask that is True inside any box (boxes end-exclusive, clipped to the image)."""
    mask = np.zeros(shape, dtype=bool)
    height, width = shape
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


__all__ = ["boxes_from_mask", "boxes_to_mask"]
