"""The label map annotators see and save, shared by every task of the app.

One 8-bit label image per radiograph, the size of the radiograph, row-major ``(rows, columns)``:

====  ============  ==========================================================================
 0    background
 1    right lung    the patient's right lung (on the image's LEFT in a PA/AP view)
 2    left lung     the patient's left lung (on the image's right)
 3    pneumonia     opacity inside either lung; the lung side is the lung the pixel lies in
====  ============  ==========================================================================

Pneumonia is painted over the lungs, so the lung field is ``label > 0`` and the pneumonia mask ``label == 3``.
An image whose saved label has lungs but no pneumonia is a negative training example for DLNet.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
RIGHT_LUNG = 1
LEFT_LUNG = 2
PNEUMONIA = 3

#: name -> value, in the order MONAI Label (and OHIF's segment list) shows them
LABELS: dict[str, int] = {"right lung": RIGHT_LUNG, "left lung": LEFT_LUNG, "pneumonia": PNEUMONIA}
LUNG_LABELS: dict[str, int] = {"right lung": RIGHT_LUNG, "left lung": LEFT_LUNG}
KNOWN_VALUES = frozenset({BACKGROUND, *LABELS.values()})


def compose_label(right_lung: np.ndarray, left_lung: np.ndarray, pneumonia: np.ndarray | None = None) -> np.ndarray:
    """Label map ``uint8 (H, W)`` from boolean masks of the same shape; pneumonia is drawn last (over the lungs)."""
    label = np.zeros(right_lung.shape, dtype=np.uint8)
    label[right_lung] = RIGHT_LUNG
    label[left_lung] = LEFT_LUNG
    if pneumonia is not None:
        label[pneumonia] = PNEUMONIA
    return label


def lung_mask(label: np.ndarray) -> np.ndarray:
    """Boolean lung field (both lungs, pneumonia included) of a label map."""
    return label > BACKGROUND


def pneumonia_mask(label: np.ndarray) -> np.ndarray:
    """Boolean pneumonia mask of a label map."""
    return label == PNEUMONIA
