"""Cone-beam geometry of a chest radiograph: point source, flat detector, PA or AP view.

Coordinates are the CT's LPS frame in mm (x -> patient left, y -> posterior, z -> superior; see
:mod:`pneumonitor.duality.ct`). The central ray passes through the isocentre along y:

* **PA** (posterior-anterior, the standard erect chest film): source behind the patient at ``y_iso + SID``,
  detector in front of the chest at ``y_iso + SID - SDD``;
* **AP** (anterior-posterior, bedside films): source in front at ``y_iso - SID``, detector behind the back.

Both views are displayed as radiographs are read: as if facing the patient, patient's right on the image left
(columns increase towards +x, patient left), head at the top (rows increase towards -z, inferior).

Defaults: SDD = 1800 mm (the standard 180 cm PA chest distance), SID = 1650 mm (isocentre about 15 cm in front of
the detector, mid-chest), detector 1024 x 1024 pixels of 0.42 mm (a 43 x 43 cm flat panel, magnification 1.09 at the
isocentre, so the field at the isocentre is 39.4 cm). The paper states "1024 x 1024 with 0.168 mm pixel size": that
is a 17.2 cm detector, which cannot hold an adult chest at any physical magnification (>= 1); ``pixel_size_mm=0.168``
reproduces it literally (a 17 cm field centred on the isocentre).
"""

from __future__ import annotations

import dataclasses

import numpy as np

VIEWS = ("PA", "AP")


@dataclasses.dataclass(frozen=True)
class ConeBeamGeometry:
    """Source, detector and view.

    Attributes:
        view: "PA" or "AP".
        source_to_detector_mm: SDD, source to detector plane along the central ray.
        source_to_isocentre_mm: SID, source to isocentre; ``SDD / SID`` is the magnification at the isocentre.
        rows, cols: detector size in pixels (H, W).
        pixel_size_mm: detector pixel pitch (square pixels), mm.
        isocentre_mm: LPS (x, y, z) of the isocentre; None = centre of the body's bounding box at render time.
    """

    view: str = "PA"
    source_to_detector_mm: float = 1800.0
    source_to_isocentre_mm: float = 1650.0
    rows: int = 1024
    cols: int = 1024
    pixel_size_mm: float = 0.42
    isocentre_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if not 0 < self.source_to_isocentre_mm < self.source_to_detector_mm:
            raise ValueError(
                "need 0 < source-to-isocentre < source-to-detector distance, got "
                f"{self.source_to_isocentre_mm} and {self.source_to_detector_mm} mm"
            )
        if self.rows < 1 or self.cols < 1 or self.pixel_size_mm <= 0:
            raise ValueError(f"bad detector {self.rows}x{self.cols} at {self.pixel_size_mm} mm")

    @property
    def magnification(self) -> float:
        return self.source_to_detector_mm / self.source_to_isocentre_mm

    def with_isocentre(self, isocentre_mm: np.ndarray | tuple[float, float, float]) -> ConeBeamGeometry:
        return dataclasses.replace(self, isocentre_mm=tuple(float(v) for v in isocentre_mm))  # type: ignore[arg-type]

    def _iso(self) -> np.ndarray:
        if self.isocentre_mm is None:
            raise ValueError("isocentre not set: call with_isocentre() (render_drr does it from the body mask)")
        return np.asarray(self.isocentre_mm, dtype=float)

    @property
    def beam_sign(self) -> float:
        """-1 when the beam travels towards -y (PA: posterior to anterior), +1 for AP."""
        return -1.0 if self.view == "PA" else 1.0

    def source_mm(self) -> np.ndarray:
        """LPS position (x, y, z) of the focal spot, mm."""
        iso = self._iso()
        return iso - self.beam_sign * np.array([0.0, self.source_to_isocentre_mm, 0.0])

    def detector_y_mm(self) -> float:
        """y coordinate (mm) of the detector plane."""
        return float(self.source_mm()[1] + self.beam_sign * self.source_to_detector_mm)

    def pixel_x_mm(self) -> np.ndarray:
        """x (LPS, mm) of each detector column centre, ``[cols]``; increases to the patient's left."""
        return self._iso()[0] + (np.arange(self.cols) - (self.cols - 1) / 2.0) * self.pixel_size_mm

    def pixel_z_mm(self) -> np.ndarray:
        """z (LPS, mm) of each detector row centre, ``[rows]``; decreases downwards (inferior)."""
        return self._iso()[2] - (np.arange(self.rows) - (self.rows - 1) / 2.0) * self.pixel_size_mm

    def detector_points_mm(self) -> np.ndarray:
        """LPS positions of all pixel centres, float64 ``[rows, cols, 3]``."""
        x = self.pixel_x_mm()[None, :].repeat(self.rows, 0)
        z = self.pixel_z_mm()[:, None].repeat(self.cols, 1)
        y = np.full_like(x, self.detector_y_mm())
        return np.stack([x, y, z], axis=-1)

    def project_points(self, points_mm: np.ndarray) -> np.ndarray:
        """Detector (row, col) coordinates (float, pixel units) of LPS points ``[N, 3]`` -> ``[N, 2]``."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=float))
        source = self.source_mm()
        t = (self.detector_y_mm() - source[1]) / (points[:, 1] - source[1])
        x = source[0] + t * (points[:, 0] - source[0])
        z = source[2] + t * (points[:, 2] - source[2])
        iso = self._iso()
        col = (x - iso[0]) / self.pixel_size_mm + (self.cols - 1) / 2.0
        row = (iso[2] - z) / self.pixel_size_mm + (self.rows - 1) / 2.0
        return np.stack([row, col], axis=1)

    def describe(self) -> dict:
        return {
            "view": self.view,
            "source_to_detector_mm": self.source_to_detector_mm,
            "source_to_isocentre_mm": self.source_to_isocentre_mm,
            "magnification": round(self.magnification, 4),
            "detector_rows": self.rows,
            "detector_cols": self.cols,
            "pixel_size_mm": self.pixel_size_mm,
            "isocentre_mm": None if self.isocentre_mm is None else [round(v, 3) for v in self.isocentre_mm],
        }
