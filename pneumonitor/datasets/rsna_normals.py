"""Adult normal radiographs of the RSNA challenge (via the COVID-19 Radiography Database), 224 px -> MONAI datalist.

Every image is a negative (``label`` 0). RSNA has one image per patient and this copy keeps no patient id, so the
image's database name (``Normal-<n>``) is the patient id. Splits are by that id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.nih import ADULT_FRACTIONS
from pneumonitor.datasets.datalist import manifest_rows
from pneumonitor.datasets.splits import assign_splits

SOURCE = "rsna-normals"


def convert_rsna_normals(
    root: str | Path, seed: int = 0, fractions: Sequence[float] = ADULT_FRACTIONS
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Items ``image, label=0, patient_id, finding="normal", source="rsna-normals", split`` and excluded rows."""
    rows, excluded = manifest_rows(root, "rsna-normals-224")
    items: list[dict[str, Any]] = []
    for image, row in rows:
        items.append({"image": str(image), "label": 0, "patient_id": Path(row["source_name"]).stem,
                      "finding": "normal", "source": SOURCE})
    assign_splits(items, fractions=fractions, seed=seed)
    return items, excluded


__all__ = ["convert_rsna_normals"]
