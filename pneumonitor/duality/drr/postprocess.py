"""DRR post-processing as the paper (Sec. IV-C): invert, 8-bit, gamma correction of over-bright images."""

from __future__ import annotations

import dataclasses

import numpy as np

#: Images whose 8-bit mean exceeds this get gamma correction (paper: 220).
BRIGHT_MEAN = 220.0
#: The paper's gamma.
GAMMA = 0.2


@dataclasses.dataclass
class PostprocessResult:
    """uint8 ``[H, W]`` radiograph (MONOCHROME2: lungs dark, bone bright), and whether gamma was applied."""

    image: np.ndarray
    gamma_applied: bool
    mean_before_gamma: float


POSTPROCESS_MODES = ("paper", "log")


def to_radiograph(
    transmission: np.ndarray, bright_mean: float = BRIGHT_MEAN, gamma: float = GAMMA, mode: str = "paper"
) -> PostprocessResult:
    """Detector transmission ``I / I0`` (float ``[H, W]``, 1 = unattenuated) -> 8-bit radiograph.

    ``mode="paper"`` (default, Sec. IV-C):

    1. invert: ``v = 1 - I / I0`` (the raw DRR is dark where the body absorbs; a radiograph is bright there),
       clipped to [0, 1] and scaled to 0..255 — a fixed mapping, so images of different patients are comparable;
    2. if the mean of the 8-bit image is > ``bright_mean`` (paper: 220), gamma correction with ``gamma`` (paper: 0.2),
       applied as ``out = 255 * (v / 255) ** (1 / gamma)``: with gamma < 1 this darkens the over-bright image, which
       is the paper's purpose (the other convention, ``v ** gamma``, would brighten it further).

    ``mode="log"``: what a digital radiography system displays: ``v = -ln(I / I0)`` scaled by its 99.5th
    percentile over the image (so the densest 0.5 % saturate), to 0..255; then the same gamma rule.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"mode must be one of {POSTPROCESS_MODES}, got {mode!r}")
    t = np.asarray(transmission, dtype=np.float64)
    if mode == "paper":
        v = np.clip(1.0 - t, 0.0, 1.0)
    else:
        attenuation = -np.log(np.clip(t, 1e-6, 1.0))
        v = np.clip(attenuation / max(float(np.percentile(attenuation, 99.5)), 1e-6), 0.0, 1.0)
    image = np.round(255.0 * v).astype(np.uint8)
    mean = float(image.mean())
    applied = mean > bright_mean
    if applied:
        image = np.round(255.0 * (image / 255.0) ** (1.0 / gamma)).astype(np.uint8)
    return PostprocessResult(image=image, gamma_applied=applied, mean_before_gamma=mean)

def lung_footprint_png(right: np.ndarray, left: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` lung label image in the project's convention: right lung 255, left lung 128, background 0.

    Where both footprints overlap (behind the mediastinum) the right lung wins; the masks are footprints of the 3-D
    lungs, so they overlap only in a thin band.
    """
    from pneumonitor.severity import LEFT_LUNG_VALUE, RIGHT_LUNG_VALUE

    out = np.zeros(right.shape, np.uint8)
    out[left] = LEFT_LUNG_VALUE
    out[right] = RIGHT_LUNG_VALUE
    return out
