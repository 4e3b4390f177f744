"""Adult normal radiographs of the RSNA challenge (via the COVID-19 Radiography Database), 224 px -> MONAI datalist.

Every image is a negative (``label`` 0). RSNA has one image per patient and this copy keeps no patient id, so the
image's database name (``Normal-<n>``) is the patient id. Splits are by that id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.nih import ADULT_FRACTIONS
from pneumonitor.datasets.datalist import Conversion, convert_manifest

SOURCE = "rsna-normals"


def convert_rsna_normals(root: str | Path, seed: int = 0, fractions: Sequence[float] = ADULT_FRACTIONS) -> Conversion:
    """Items ``image, label=0, patient_id, finding="normal", source="rsna-normals", split`` and excluded rows."""
    return convert_manifest(root, "rsna-normals-224", _item_fields, seed, fractions)


def _item_fields(image: Path, row: dict[str, str]) -> dict[str, Any]:
    return {"label": 0, "patient_id": Path(row["source_name"]).stem, "finding": "normal", "source": SOURCE}


__all__ = ["convert_rsna_normals"]
