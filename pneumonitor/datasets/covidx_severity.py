"""COVIDx-S severity-scored images from outside the COVID collection (Actualmed, Figure 1) -> MONAI datalist.

All 38 images are COVID-19 positives (``label`` 1) with a COVIDx-S geographic extent score (0-8, ``severity``,
``severity_source = "covidx-s"``) and opacity score (0-8). Views: Actualmed rows carry PA/AP; the Figure 1 rows have
no view in the manifest, and their own metadata says ``AP erect`` for some: frontal views are assumed for all
(Figure 1 publishes frontal radiographs), and the recorded ``view`` is empty when unknown. Lateral views would be
excluded. Patient-level seeded splits; by default all images go to ``test`` (an external severity test set).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.datalist import Conversion, convert_manifest

SOURCE = "covidx-s-extra"
LATERAL_VIEWS = ("L", "LL", "LATERAL")


def convert_covidx_severity(
    root: str | Path, seed: int = 0, fractions: Sequence[float] = (0.0, 0.0, 1.0)
) -> Conversion:
    """Items ``image, label=1, severity, severity_source, opacity_covidx, patient_id, view, source, split``."""
    return convert_manifest(root, "covidx-severity-extra", _item_fields, seed, fractions)


def _item_fields(image: Path, row: dict[str, str]) -> dict[str, Any] | str:
    """The item's fields, or why the row is left out (a lateral view, no geographic score)."""
    if row["view"].upper() in LATERAL_VIEWS:
        return f"not a frontal view (view {row['view']!r})"
    try:
        severity = float(row["covidnet_geographic"])
    except ValueError:
        severity = math.nan
    if math.isnan(severity):
        return "no COVIDx-S geographic score"
    return {
        "label": 1,
        "severity": severity,
        "severity_source": "covidx-s",
        "severity_covidx": severity,
        "opacity_covidx": float(row["covidnet_opacity"]) if row["covidnet_opacity"] else None,
        "patient_id": row["patientid"] or image.stem,
        "view": row["view"],
        "finding": row["finding"],
        "dataset": row["dataset"],
        "source": SOURCE,
    }


__all__ = ["convert_covidx_severity"]
