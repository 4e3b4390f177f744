"""Severity: the Pneumonia Ratio per lung and the 0-8 score (Amer et al. 2020, Sec. IV-B, Fig. 6, Sec. V-C).

All masks are ``(H, W)`` arrays in image (row, column) order of a frontal PA/AP view, where the patient's right lung
is on the IMAGE LEFT. Ratios are percentages in [0, 100].

Score bins per lung (the paper: 0 none, 1 < 25 %, 2 25-50 %, 3 50-75 %, 4 > 75 %), made exact here with
half-open intervals: 0 iff the ratio is 0; 1 for (0, 25); 2 for [25, 50); 3 for [50, 75); 4 for [75, 100].
The total score is the sum of both lungs (0-8).

Two rules say which pixels are pneumonia (``severity_rule``):

* ``"heatmap-threshold"`` (the paper): ``heatmap >= heatmap_threshold`` inside the lungs;
* ``"extent-head"`` (DLNet with a fitted :class:`pneumonitor.networks.ExtentHead`): the head's mean over each lung is
  the lung's extent ``e`` on the expert 0-4 scale; the lung's ratio is ``extent_ratio(e)`` (the middle of the bin
  ``e`` rounds to, linear in between: 25 * (e - 0.5) %), and its pneumonia is that fraction of its pixels where the
  heatmap is highest (:func:`top_fraction_region`). The heatmap says *where*, the head *how much*: the paper's
  heatmap area does not track the experts (DLNet card), the head was fitted to them.

Either way a negative image (``probability < classification_threshold``) has no pneumonia, and each lung's score
follows from its ratio by the bins above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLASSIFICATION_THRESHOLD",
    "HEATMAP_THRESHOLD",
    "SCORE_BIN_EDGES",
    "RIGHT_LUNG_VALUE",
    "LEFT_LUNG_VALUE",
    "SeverityResult",
    "InsufficientLungs",
    "split_lungs",
    "pneumonia_ratio",
    "lung_score",
    "pneumonia_region",
    "assess_severity",
    "lung_label_image",
    "involvement_from_score",
    "SEVERITY_RULES",
    "PROBABILITY_SOURCES",
    "extent_ratio",
    "lung_extents",
    "top_fraction_region",
]

#: the two pneumonia-mask rules (module docstring)
SEVERITY_RULES = ("heatmap-threshold", "extent-head")
#: where the pneumonia probability P comes from: DLNet's classification head (the paper) or the extent head's lung
#: classifier (:mod:`pneumonitor.networks.dlnet`)
PROBABILITY_SOURCES = ("classification-head", "lung-classifier")

#: DLNet probability below which an image is negative (paper: ROC point nearest (0, 1)).
CLASSIFICATION_THRESHOLD = 0.62
#: heatmap value at or above which a pixel is pneumonia (paper: best localization mAP).
HEATMAP_THRESHOLD = 0.8
#: lower edges (percent) of scores 2, 3, 4; score 1 is any ratio above 0 below the first edge.
SCORE_BIN_EDGES = (25.0, 50.0, 75.0)
#: values of the written lung-mask PNGs
RIGHT_LUNG_VALUE = 255
LEFT_LUNG_VALUE = 128

#: a split-off piece smaller than this fraction of the larger lung is treated as segmentation noise.
MIN_LUNG_FRACTION = 0.05


def involvement_from_score(score_total):
    """Percent of both lungs an expert's 0-8 geographic extent implies (the inverse of the scoring rule, mid-bin).

    A lung scored ``k > 0`` is involved ``(k - 0.5) * 25`` % (the middle of its bin); a total ``T`` up to 2 is read
    as one or two lungs at score 1 (``6.25 * T`` %: 6.25 % at T = 1, 12.5 % at T = 2), above 2 as both lungs
    involved (``12.5 * (T - 1)`` %, 87.5 % at T = 8). ``T`` may be a mean of raters (not an integer); works on
    floats, numpy arrays and torch tensors alike.
    """
    low = 6.25 * score_total
    high = 12.5 * (score_total - 1.0)
    if hasattr(score_total, "where"):  # torch
        return low.where(score_total <= 2.0, high)
    return np.where(np.asarray(score_total) <= 2.0, low, high) if np.ndim(score_total) else (
        float(low) if score_total <= 2.0 else float(high))


class InsufficientLungs(ValueError):
    """The lung mask does not contain a right and a left lung; the message says what was found."""


@dataclass
class SeverityResult:
    """Severity of one image. Masks are ``(H, W)`` bool; ratios in percent; scores 0-4 per lung, 0-8 total."""

    probability: float
    positive: bool
    ratio_total: float
    ratio_right: float
    ratio_left: float
    score_right: int
    score_left: int
    score_total: int
    pneumonia_mask: np.ndarray = field(repr=False)
    right_lung: np.ndarray = field(repr=False)
    left_lung: np.ndarray = field(repr=False)

    def as_row(self) -> dict[str, float | int]:
        """The scalar fields, ratios rounded to 0.01 %."""
        return {
            "pneumonia_probability": round(float(self.probability), 6),
            "positive": int(self.positive),
            "ratio_total": round(self.ratio_total, 2),
            "ratio_right": round(self.ratio_right, 2),
            "ratio_left": round(self.ratio_left, 2),
            "score_right": self.score_right,
            "score_left": self.score_left,
            "score_total": self.score_total,
        }


def _split_merged_component(component: np.ndarray) -> np.ndarray:
    """Cut a component that spans both sides along the column of least lung in the central third (mediastinum).

    Returns a label image with 1 = image-left part, 2 = image-right part.
    """
    width = component.shape[1]
    columns = component.sum(axis=0)
    start, stop = width // 3, max(width // 3 + 1, (2 * width) // 3)
    cut = start + int(np.argmin(columns[start:stop]))
    labels = np.zeros(component.shape, dtype=np.int32)
    labels[:, :cut][component[:, :cut]] = 1
    labels[:, cut:][component[:, cut:]] = 2
    return labels


def split_lungs(lung_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a binary lung mask into the patient's right (image left) and left (image right) lung.

    Each lung is the largest connected component (8-connectivity) whose centroid lies on its side of the image
    midline. A component that straddles the midline with a substantial part on each side (lungs merged by a
    segmentation bridge) is first cut at the column of least lung area in the central third. Smaller components
    (noise, stray pixels) are dropped.

    Args:
        lung_mask: ``(H, W)``, nonzero = lung.
    Returns:
        ``(right_lung, left_lung)``, ``(H, W)`` bool each; either may be empty when no lung is on that side.
    """
    from scipy import ndimage  # here, not at the top: `pneumonitor --help` reads this module's thresholds (+0.5 s)

    mask = np.asarray(lung_mask) > 0
    if mask.ndim != 2:
        raise ValueError(f"lung_mask must be 2-D, got shape {mask.shape}")
    height, width = mask.shape
    midline = width / 2.0
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    pieces: list[np.ndarray] = []
    for index in range(1, count + 1):
        component = labels == index
        left_part = int(component[:, : int(midline)].sum())
        right_part = int(component.sum()) - left_part
        if min(left_part, right_part) > MIN_LUNG_FRACTION * max(left_part, right_part, 1):
            halves = _split_merged_component(component)
            pieces.extend([halves == 1, halves == 2])
        else:
            pieces.append(component)
    right = np.zeros_like(mask)
    left = np.zeros_like(mask)
    for piece in pieces:
        area = int(piece.sum())
        if area == 0:
            continue
        centroid_col = float(np.nonzero(piece)[1].mean())
        if centroid_col < midline:
            if area > right.sum():
                right = piece
        elif area > left.sum():
            left = piece
    return right.astype(bool), left.astype(bool)


def pneumonia_ratio(pneumonia_mask: np.ndarray, lung_mask: np.ndarray) -> float:
    """``100 * area(pneumonia within lungs) / area(lungs)`` in percent; NaN when the lung mask is empty."""
    lungs = np.asarray(lung_mask) > 0
    lung_area = int(lungs.sum())
    if lung_area == 0:
        return math.nan
    involved = int(np.logical_and(np.asarray(pneumonia_mask) > 0, lungs).sum())
    return 100.0 * involved / lung_area


def lung_score(ratio: float) -> int:
    """Per-lung score 0-4 from a ratio in percent (bins in the module docstring).

    Raises:
        ValueError: NaN or a ratio outside [0, 100].
    """
    if ratio is None or math.isnan(ratio) or ratio < 0 or ratio > 100 + 1e-9:
        raise ValueError(f"ratio must be a percentage in [0, 100], got {ratio}")
    if ratio == 0:
        return 0
    return 1 + sum(ratio >= edge for edge in SCORE_BIN_EDGES)


def pneumonia_region(
    probability: float,
    heatmap: np.ndarray,
    lungs: np.ndarray,
    classification_threshold: float = CLASSIFICATION_THRESHOLD,
    heatmap_threshold: float = HEATMAP_THRESHOLD,
) -> np.ndarray:
    """The paper's pneumonia mask: ``heatmap >= heatmap_threshold`` within ``lungs`` (boolean, same shape) when
    ``probability >= classification_threshold``, else empty."""
    if float(probability) < classification_threshold:
        return np.zeros(np.shape(lungs), dtype=bool)
    return (np.asarray(heatmap) >= heatmap_threshold) & np.asarray(lungs, dtype=bool)


def extent_ratio(extent: float) -> float:
    """Percent of a lung involved for an extent ``e`` on the expert 0-4 scale: ``clip(25 * (e - 0.5), 0, 100)``.

    The middle of each score's bin at integer ``e`` (12.5 % at 1, 37.5 % at 2, ..., 87.5 % at 4; 0 at or below 0.5),
    linear in between, so :func:`lung_score` of the ratio is ``e`` rounded (halves up) and clipped to 0-4.
    """
    return float(np.clip(25.0 * (float(extent) - 0.5), 0.0, 100.0))


def lung_extents(extent_map: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray) -> tuple[float, float]:
    """Mean of an :class:`~pneumonitor.networks.ExtentHead` map (at the masks' size) over each lung: the right and
    left lung's extent on the expert 0-4 scale, unclipped."""
    extent_map = np.asarray(extent_map, dtype=np.float64)
    return tuple(float(extent_map[np.asarray(lung, dtype=bool)].mean()) for lung in (right_lung, left_lung))


def top_fraction_region(heatmap: np.ndarray, lung: np.ndarray, ratio: float,
                        tie_break: np.ndarray | None = None) -> np.ndarray:
    """The ``round(ratio / 100 * area)`` pixels of ``lung`` where ``heatmap`` is highest (boolean, ``lung``'s shape).

    Equal heatmap values (e.g. a heatmap at 0 over most of a lung) are ordered by ``tie_break`` (higher first),
    then by position, so the area is exact whatever the ties.
    """
    lung = np.asarray(lung, dtype=bool)
    region = np.zeros(lung.shape, dtype=bool)
    count = int(round(float(ratio) / 100.0 * int(lung.sum())))
    if count <= 0:
        return region
    rows, cols = np.nonzero(lung)
    values = np.asarray(heatmap)[rows, cols]
    secondary = np.asarray(tie_break)[rows, cols] if tie_break is not None else np.zeros_like(values)
    order = np.lexsort((-secondary, -values))[:count]  # last key sorts first: heatmap, then tie_break
    region[rows[order], cols[order]] = True
    return region


def assess_severity(
    probability: float,
    heatmap: np.ndarray,
    lung_mask: np.ndarray,
    classification_threshold: float = CLASSIFICATION_THRESHOLD,
    heatmap_threshold: float = HEATMAP_THRESHOLD,
    extent_map: np.ndarray | None = None,
) -> SeverityResult:
    """Severity of one image: the paper's rule, or the extent-head rule when ``extent_map`` is given (module
    docstring).

    Negative images (``probability < classification_threshold``) get an empty pneumonia mask, ratios 0 and scores 0.
    Otherwise pneumonia = ``heatmap >= heatmap_threshold`` within the lungs, or with ``extent_map`` the fraction
    :func:`extent_ratio` of each lung where the heatmap is highest (``heatmap_threshold`` unused).

    Args:
        probability: DLNet's pneumonia probability.
        heatmap: ``(H, W)`` localization heatmap at the lung mask's size.
        lung_mask: ``(H, W)`` binary lung mask (both lungs).
        extent_map: ``(H, W)`` :class:`~pneumonitor.networks.ExtentHead` map at the lung mask's size, or ``None``.
    Raises:
        InsufficientLungs: no right or no left lung in ``lung_mask``.
        ValueError: mismatched shapes or a NaN probability/heatmap/extent map.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != np.shape(lung_mask):
        raise ValueError(f"heatmap {heatmap.shape} and lung mask {np.shape(lung_mask)} differ in shape")
    if extent_map is not None and np.shape(extent_map) != heatmap.shape:
        raise ValueError(f"extent map {np.shape(extent_map)} and lung mask {heatmap.shape} differ in shape")
    if not math.isfinite(float(probability)) or not np.all(np.isfinite(heatmap)) or (
            extent_map is not None and not np.all(np.isfinite(extent_map))):
        raise ValueError("probability, heatmap or extent map contains NaN/inf")
    right, left = split_lungs(lung_mask)
    missing = [name for name, lung in (("right", right), ("left", left)) if not lung.any()]
    if missing:
        found = "no lung" if len(missing) == 2 else f"no {missing[0]} lung"
        raise InsufficientLungs(f"lung segmentation found {found}; severity needs both lungs")
    lungs = right | left
    positive = float(probability) >= classification_threshold
    if extent_map is None:
        pneumonia = pneumonia_region(probability, heatmap, lungs, classification_threshold, heatmap_threshold)
    elif positive:
        extents = lung_extents(extent_map, right, left)
        pneumonia = top_fraction_region(heatmap, right, extent_ratio(extents[0]), extent_map) | top_fraction_region(
            heatmap, left, extent_ratio(extents[1]), extent_map)
    else:
        pneumonia = np.zeros(lungs.shape, dtype=bool)
    ratio_right = pneumonia_ratio(pneumonia, right)
    ratio_left = pneumonia_ratio(pneumonia, left)
    score_right, score_left = lung_score(ratio_right), lung_score(ratio_left)
    return SeverityResult(
        probability=float(probability),
        positive=positive,
        ratio_total=pneumonia_ratio(pneumonia, lungs),
        ratio_right=ratio_right,
        ratio_left=ratio_left,
        score_right=score_right,
        score_left=score_left,
        score_total=score_right + score_left,
        pneumonia_mask=pneumonia,
        right_lung=right,
        left_lung=left,
    )


def lung_label_image(right_lung: np.ndarray, left_lung: np.ndarray) -> np.ndarray:
    """8-bit ``(H, W)`` label image: 0 background, ``RIGHT_LUNG_VALUE``, ``LEFT_LUNG_VALUE``."""
    labels = np.zeros(np.shape(right_lung), dtype=np.uint8)
    labels[np.asarray(right_lung, dtype=bool)] = RIGHT_LUNG_VALUE
    labels[np.asarray(left_lung, dtype=bool)] = LEFT_LUNG_VALUE
    return labels
