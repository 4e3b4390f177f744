"""Out-of-distribution flags from what is already measured: who, how sharp, and whether the lungs look like lungs.

The flags do not refuse an image (the QC gate does that); they travel with the result (``ood`` column) so that a
reader knows a number comes from outside the conditions the models were built and checked for:

* **pediatric**: DICOM PatientAge under 18 years. The paper's severity score was defined on adults, and the
  pediatric data here (Kermany) is a different source with different anatomy and positioning.
* **low resolution**: a shorter side under 256 px (the networks see 224-448 px; the lungs are then a few dozen px).
* **implausible lung area**: both lungs together cover under 8 % or over 60 % of the image (typical adult frontal
  radiographs: 20-40 %), or one lung is under a quarter of the other; the ratio is then a ratio of a wrong mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ood_flags", "ADULT_AGE_YEARS", "MIN_RESOLUTION_PX", "LUNG_FRACTION_RANGE", "MIN_LUNG_BALANCE"]

ADULT_AGE_YEARS = 18.0
MIN_RESOLUTION_PX = 256
LUNG_FRACTION_RANGE = (0.08, 0.60)
MIN_LUNG_BALANCE = 0.25


def ood_flags(radiograph: Any, severity: Any = None) -> list[str]:
    """The flags of one analysed image (a :class:`pneumonitor.io.Radiograph` and its ``SeverityResult``)."""
    from pneumonitor.datasets.rsna import parse_dicom_age

    flags = []
    raw_age = str(radiograph.meta.get("patient_age", "") or "")
    age = parse_dicom_age(raw_age) if raw_age else None
    if age is not None and age < ADULT_AGE_YEARS:
        flags.append(f"pediatric (PatientAge {raw_age})")
    rows, columns = radiograph.shape
    if min(rows, columns) < MIN_RESOLUTION_PX:
        flags.append(f"low resolution ({rows}x{columns} px)")
    if severity is not None:
        right, left = int(np.count_nonzero(severity.right_lung)), int(np.count_nonzero(severity.left_lung))
        fraction = (right + left) / float(rows * columns)
        if not LUNG_FRACTION_RANGE[0] <= fraction <= LUNG_FRACTION_RANGE[1]:
            flags.append(f"implausible lung area ({100 * fraction:.0f} % of the image)")
        elif min(right, left) < MIN_LUNG_BALANCE * max(right, left):
            flags.append(f"implausible lung shape (one lung {max(right, left) / max(min(right, left), 1):.1f}x the other)")
    return flags
