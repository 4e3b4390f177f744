"""Hannover Medical School adult COVID-19 CR radiographs with clinical course -> MONAI datalist.

All images are COVID-19 positives (``label`` 1), mostly ICU AP, several per patient; no boxes, masks or expert
scores. Each item keeps the clinical course relative to the exam (days): ``admission_offset``,
``icu_admission_offset``, ``icu_release_offset``, ``death_offset`` (None when absent), and derived flags:
``icu`` (1 when the patient was ever admitted to an ICU), ``icu_at_exam`` (ICU admission at or before the exam and no
release before it) and ``died`` (a death offset exists). ``offset_days`` = minus the admission offset (days since
admission), which orders a patient's images for monitoring.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.nih import ADULT_FRACTIONS
from pneumonitor.datasets.datalist import Conversion, convert_manifest

SOURCE = "hannover"
COURSE_COLUMNS = ("admission_offset", "icu_admission_offset", "icu_release_offset", "death_offset")


def _days(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def clinical_course(row: dict[str, str]) -> dict[str, Any]:
    """Offsets (days relative to the exam) and the ``icu``, ``icu_at_exam``, ``died`` flags of one manifest row."""
    course: dict[str, Any] = {name: _days(row.get(name, "")) for name in COURSE_COLUMNS}
    icu_in, icu_out = course["icu_admission_offset"], course["icu_release_offset"]
    course["icu"] = int(icu_in is not None)
    course["icu_at_exam"] = int(icu_in is not None and icu_in <= 0 and (icu_out is None or icu_out >= 0))
    course["died"] = int(course["death_offset"] is not None)
    return course


def convert_hannover(root: str | Path, seed: int = 0, fractions: Sequence[float] = ADULT_FRACTIONS) -> Conversion:
    """Items ``image, label=1, patient_id, view, age, sex, offset_days, <clinical course>, source, split``."""
    return convert_manifest(root, "hannover-covid", _item_fields, seed, fractions)


def _item_fields(image: Path, row: dict[str, str]) -> dict[str, Any]:
    course = clinical_course(row)
    admission = course["admission_offset"]
    return {
        "label": 1,
        "patient_id": row["patient_id"],
        "view": row["projection"].upper(),
        "age": _days(row["age"]),
        "sex": row["sex"],
        "offset_days": None if admission is None else -admission,
        "finding": "COVID-19",
        "source": SOURCE,
        **course,
    }


__all__ = ["clinical_course", "convert_hannover"]
