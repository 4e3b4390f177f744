"""NIH ChestX-ray8 subset (Wang et al. 2017): adult "No Finding" / "Pneumonia" radiographs -> MONAI datalist.

``manifest.csv`` lists ``stored_file, patient_id, nih_image_index, finding (no_finding|pneumonia), pneumonia (0/1),
boxes`` (JSON list of ``{"finding", "box_xyxy"}`` in stored pixels, end-exclusive). The patient is the first 8 digits
of the NIH file name (``patient_id``); splits are by patient. Labels are NIH's report-mined (NLP) labels: noisy.
Only "Pneumonia" boxes are kept as localization (other findings' boxes do not outline pneumonia). A positive with
a box has a *partial* location (the NIH box list marks one region, not every opacity): ``has_boxes`` says so, and
the training mix decides what that means for the loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.datalist import Conversion, convert_manifest

SOURCE = "nih"
#: validation and test get more patients than the default 10 % each: these sets exist to measure adult behaviour
ADULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


def pneumonia_boxes(text: str) -> list[list[float]]:
    """``[[x0, y0, x1, y1], ...]`` of the "Pneumonia" entries of a manifest ``boxes`` cell ("" -> [])."""
    if not text:
        return []
    return [[float(v) for v in entry["box_xyxy"]] for entry in json.loads(text)
            if str(entry.get("finding", "")).lower() == "pneumonia"]


def convert_nih(root: str | Path, seed: int = 0, fractions: Sequence[float] = ADULT_FRACTIONS) -> Conversion:
    """Items ``image, label, boxes, patient_id, finding, source="nih", split`` and excluded rows."""
    return convert_manifest(root, "nih-chestxray-subset", _item_fields, seed, fractions)


def _item_fields(image: Path, row: dict[str, str]) -> dict[str, Any]:
    label = int(row["pneumonia"])
    boxes = pneumonia_boxes(row["boxes"]) if label == 1 else []
    return {"label": label, "boxes": boxes, "patient_id": row["patient_id"], "finding": row["finding"], "source": SOURCE}


__all__ = ["ADULT_FRACTIONS", "convert_nih", "pneumonia_boxes"]
