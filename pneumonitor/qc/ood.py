"""Out-of-distribution flags from what is already measured: who, how sharp, and whether the lungs look like lungs.

The flags do not refuse an image (the QC gate does that); they travel with the result (``ood`` column) so that a
reader knows a number comes from outside the conditions the models were built and checked for:

* **pediatric**: DICOM PatientAge under 18 years. The paper's severity score was defined on adults, and the
  pediatric data here (Kermany) is a different source with different anatomy and positioning.
* **low resolution**: a shorter side under 256 px (the networks see 224-448 px; the lungs are then a few dozen px).
* **heavy noise / heavy blur**: measured on the image resized to 256 x 256 (area): the noise SD by Immerkaer's
  filter (Immerkaer 1996, "Fast noise variance estimation") above 0.02, or the sharpness var(Laplacian)/var(image)
  below 0.002. On 538 radiographs of the six frontal sources in ``../shared/data`` the noise SD is 0.0005-0.016
  (median 0.003) and the sharpness 0.0037-0.68 (median 0.042): none is flagged; added Gaussian noise of SD 0.05
  (noise 0.025) or a Gaussian blur of 4 px at 512 px (sharpness 0.0007) is.
* **implausible lung area**: both lungs together cover under 8 % or over 60 % of the image (typical adult frontal
  radiographs: 20-40 %), or one lung is under a quarter of the other; the ratio is then a ratio of a wrong mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ood_flags",
    "noise_and_sharpness",
    "ADULT_AGE_YEARS",
    "MIN_RESOLUTION_PX",
    "LUNG_FRACTION_RANGE",
    "MIN_LUNG_BALANCE",
    "MAX_NOISE_SD",
    "MIN_SHARPNESS",
]

ADULT_AGE_YEARS = 18.0
MIN_RESOLUTION_PX = 256
LUNG_FRACTION_RANGE = (0.08, 0.60)
MIN_LUNG_BALANCE = 0.25
MAX_NOISE_SD = 0.02
MIN_SHARPNESS = 0.002
#: Immerkaer's noise-estimation kernel (the difference of two Laplacians: image structure cancels, noise does not)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def noise_and_sharpness(pixels: np.ndarray, size: int = 256) -> tuple[float, float]:
    """(noise SD, var(Laplacian)/var(image)) of a [0, 1] image resized to ``size`` x ``size``."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    mode = "area" if min(image.shape[-2:]) >= size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    x = F.interpolate(image, size=(size, size), mode=mode, **kwargs)[0, 0].numpy().astype(np.float64)
    noise = float(np.sqrt(np.pi / 2) * np.abs(ndimage.convolve(x, _IMMERKAER))[1:-1, 1:-1].mean() / 6)
    sharpness = float(np.var(ndimage.laplace(x)) / max(float(np.var(x)), 1e-12))
    return noise, sharpness


def ood_flags(radiograph: Any, severity: Any = None) -> list[str]:
    """The flags of one analysed image (a :class:`pneumonitor.reading.Radiograph` and its ``SeverityResult``)."""
    from pneumonitor.datasets.rsna import parse_dicom_age

    flags = []
    raw_age = str(radiograph.meta.get("patient_age", "") or "")
    age = parse_dicom_age(raw_age) if raw_age else None
    if age is not None and age < ADULT_AGE_YEARS:
        flags.append(f"pediatric (PatientAge {raw_age})")
    rows, columns = radiograph.shape
    if min(rows, columns) < MIN_RESOLUTION_PX:
        flags.append(f"low resolution ({rows}x{columns} px)")
    noise, sharpness = noise_and_sharpness(radiograph.pixels)
    if noise > MAX_NOISE_SD:
        flags.append(f"heavy noise (SD {noise:.3f} at 256 px)")
    if sharpness < MIN_SHARPNESS:
        flags.append(f"heavy blur (sharpness {sharpness:.4f})")
    if severity is not None:
        right, left = int(np.count_nonzero(severity.right_lung)), int(np.count_nonzero(severity.left_lung))
        fraction = (right + left) / float(rows * columns)
        if not LUNG_FRACTION_RANGE[0] <= fraction <= LUNG_FRACTION_RANGE[1]:
            flags.append(f"implausible lung area ({100 * fraction:.0f} % of the image)")
        elif min(right, left) < MIN_LUNG_BALANCE * max(right, left):
            flags.append(f"implausible lung shape (one lung {max(right, left) / max(min(right, left), 1):.1f}x the other)")
    return flags
