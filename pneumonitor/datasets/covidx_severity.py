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

import pandas as pd

from pneumonitor.datasets.splits import assign_splits

SOURCE = "covidx-s-extra"
LATERAL_VIEWS = ("L", "LL", "LATERAL")


def convert_covidx_severity(
    root: str | Path, seed: int = 0, fractions: Sequence[float] = (0.0, 0.0, 1.0)
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Items ``image, label=1, severity, severity_source, opacity_covidx, patient_id, view, source, split``."""
    root = Path(root).resolve()
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: is {root} the covidx-severity-extra folder?")
    table = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    items: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for row in table.to_dict("records"):
        image = root / row["stored_file"]
        if row["view"].upper() in LATERAL_VIEWS:
            excluded.append({"image": str(image), "reason": f"not a frontal view (view {row['view']!r})"})
            continue
        if not image.is_file():
            excluded.append({"image": str(image), "reason": "image file missing"})
            continue
        try:
            severity = float(row["covidnet_geographic"])
        except ValueError:
            severity = math.nan
        if math.isnan(severity):
            excluded.append({"image": str(image), "reason": "no COVIDx-S geographic score"})
            continue
        opacity = float(row["covidnet_opacity"]) if row["covidnet_opacity"] else None
        items.append(
            {
                "image": str(image),
                "label": 1,
                "severity": severity,
                "severity_source": "covidx-s",
                "severity_covidx": severity,
                "opacity_covidx": opacity,
                "patient_id": row["patientid"] or image.stem,
                "view": row["view"],
                "finding": row["finding"],
                "dataset": row["dataset"],
                "source": SOURCE,
            }
        )
    assign_splits(items, fractions=fractions, seed=seed)
    return items, excluded


__all__ = ["convert_covidx_severity"]
