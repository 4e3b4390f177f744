"""Adult normal radiographs of the RSNA challenge (via the COVID-19 Radiography Database), 224 px -> MONAI datalist.

Every image is a negative (``label`` 0). RSNA has one image per patient and this copy keeps no patient id, so the
image's database name (``Normal-<n>``) is the patient id. Splits are by that id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from pneumonitor.datasets.nih import ADULT_FRACTIONS
from pneumonitor.datasets.splits import assign_splits

SOURCE = "rsna-normals"


def convert_rsna_normals(
    root: str | Path, seed: int = 0, fractions: Sequence[float] = ADULT_FRACTIONS
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Items ``image, label=0, patient_id, finding="normal", source="rsna-normals", split`` and excluded rows."""
    root = Path(root).resolve()
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: is {root} the rsna-normals-224 folder?")
    table = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    items: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for row in table.to_dict("records"):
        image = root / row["stored_file"]
        if not image.is_file():
            excluded.append({"image": str(image), "reason": "image file missing"})
            continue
        items.append({"image": str(image), "label": 0, "patient_id": Path(row["source_name"]).stem,
                      "finding": "normal", "source": SOURCE})
    assign_splits(items, fractions=fractions, seed=seed)
    return items, excluded


__all__ = ["convert_rsna_normals"]
