"""Pediatric normal / pneumonia chest X-rays (Kermany et al. 2018, via CoronaHack) -> MONAI datalist.

``manifest.csv`` lists ``stored_file,label,pneumonia,...`` (labels ``normal``, ``bacterial_pneumonia``,
``viral_pneumonia``). Patient ids come from the original file names: ``person<N>_bacteria_<k>`` and
``person<N>_virus_<k>`` -> ``person<N>``; normals ``IM-<NNNN>-<k>`` / ``NORMAL2-IM-<NNNN>-<k>`` -> ``IM-<NNNN>``
(resp. ``NORMAL2-IM-<NNNN>``). Classification only: no boxes, no masks. Children are 1-5 years old (see the README).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.datalist import Conversion, convert_manifest
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS

SOURCE = "pediatric"


def pediatric_patient_id(file_name: str) -> str:
    """Patient id from a stored file name such as ``bacterial_person1000_bacteria_2931.jpg`` -> ``person1000``."""
    stem = Path(file_name).stem
    stem = re.sub(r"^(normal|bacterial|viral)_", "", stem)
    match = re.match(r"(person\d+)_", stem)
    if match:
        return match.group(1)
    match = re.match(r"((?:NORMAL2-)?IM-\d+)-", stem)
    if match:
        return match.group(1)
    return stem


def convert_pediatric(root: str | Path, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Conversion:
    """Items ``image, label (0/1), patient_id, finding, source="pediatric", split`` and excluded rows."""
    return convert_manifest(root, "pediatric-pneumonia", _item_fields, seed, fractions)


def _item_fields(image: Path, row: dict[str, str]) -> dict[str, Any]:
    return {"label": int(row["pneumonia"]), "patient_id": pediatric_patient_id(row["stored_file"]),
            "finding": row["label"], "source": SOURCE}


__all__ = ["convert_pediatric", "pediatric_patient_id"]
