"""RSNA Pneumonia Detection Challenge (Kaggle layout) -> MONAI datalist, as in the paper (Sec. III-B, V-A).

Input layout: ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``; one row per box, or one row with
empty box and ``Target=0``), optional ``stage_2_detailed_class_info.csv`` (``patientId,class``) and a folder of
``<patientId>.dcm`` files (Kaggle's ``stage_2_train_images``).

Rules:
* the rows of a patient are merged: label = ``Target`` (1 if any row is 1), boxes = all of that patient's boxes,
  as ``[x, y, x + width, y + height]`` in pixels; the Kaggle boxes refer to the released 1024x1024 DICOMs, and are
  scaled by ``Columns/1024``, ``Rows/1024`` when the DICOM has another size;
* adults only: ``PatientAge`` (0010,1010) from the DICOM header, in years, must be >= 18 (the paper dropped
  pediatric patients); a missing or unreadable age drops the image, with its reason in ``excluded.json``;
* a balanced, stratified, seeded split: each split is half positive, half negative, 9004 / 1126 / 1124 images by
  default (the paper's Table I); if there are too few adult positives or negatives, all sizes shrink by the same
  factor (logged).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumonitor.datasets.datalist import Conversion

LOGGER = logging.getLogger(__name__)

PAPER_SPLIT_SIZES: tuple[int, int, int] = (9004, 1126, 1124)
RSNA_REFERENCE_SIZE = 1024
ADULT_AGE_YEARS = 18.0
_AGE_UNITS_IN_YEARS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


@dataclass
class RsnaPatient:
    """The merged label rows of one RSNA patient (one image per patient in RSNA)."""

    patient_id: str
    label: int
    boxes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] at the 1024x1024 reference size
    detailed_class: str = ""


def read_rsna_labels(labels_csv: str | Path, class_info_csv: str | Path | None = None) -> dict[str, RsnaPatient]:
    """Merge the Kaggle label rows per patient.

    Returns:
        patientId -> RsnaPatient, in file order.
    """
    try:
        table = pd.read_csv(labels_csv, dtype={"patientId": str})
    except (OSError, pd.errors.ParserError) as error:
        raise ValueError(f"cannot read RSNA labels {labels_csv}: {error}") from error
    missing = {"patientId", "x", "y", "width", "height", "Target"} - set(table.columns)
    if missing:
        raise ValueError(f"{labels_csv} lacks columns {sorted(missing)}; is it stage_2_train_labels.csv?")
    patients: dict[str, RsnaPatient] = {}
    for row in table.itertuples(index=False):
        patient = patients.setdefault(row.patientId, RsnaPatient(row.patientId, 0))
        patient.label = max(patient.label, int(row.Target))
        if int(row.Target) == 1 and not any(pd.isna(v) for v in (row.x, row.y, row.width, row.height)):
            patient.boxes.append(
                [float(row.x), float(row.y), float(row.x) + float(row.width), float(row.y) + float(row.height)]
            )
    if class_info_csv is not None and Path(class_info_csv).is_file():
        info = pd.read_csv(class_info_csv, dtype=str).drop_duplicates("patientId")
        for patient_id, name in zip(info["patientId"], info["class"]):
            if patient_id in patients:
                patients[patient_id].detailed_class = name
    return patients


def parse_dicom_age(value: Any) -> float | None:
    """Age in years from a DICOM Age String (``"058Y"``, ``"006M"``) or a bare number (RSNA writes ``"58"``).

    Returns None when the value is empty or unparseable.
    """
    if value is None:
        return None
    text = str(value).strip().upper()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YMWD]?)", text)
    if not match:
        return None
    return float(match.group(1)) * _AGE_UNITS_IN_YEARS[match.group(2) or "Y"]


def read_dicom_header(path: str | Path) -> dict[str, Any]:
    """PatientAge (years or None), Rows, Columns and ViewPosition from a DICOM header (pixels are not read)."""
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientAge", "Rows", "Columns", "ViewPosition"])
    return {
        "age": parse_dicom_age(dataset.get("PatientAge")),
        "rows": int(dataset.get("Rows") or 0),
        "columns": int(dataset.get("Columns") or 0),
        "view": str(dataset.get("ViewPosition") or ""),
    }


def balanced_split_sizes(
    n_positive: int, n_negative: int, sizes: Sequence[int] = PAPER_SPLIT_SIZES
) -> list[tuple[int, int]]:
    """(positives, negatives) per split for balanced splits of the requested sizes, shrunk if data is short.

    Each split of size n gets ``n // 2`` positives and ``n - n // 2`` negatives. If the available positives or negatives
    do not cover the request, every size is multiplied by the same factor (rounded down) first.
    """
    wanted = [(n // 2, n - n // 2) for n in sizes]
    need_pos, need_neg = sum(p for p, _ in wanted), sum(q for _, q in wanted)
    factor = min(1.0, n_positive / max(need_pos, 1), n_negative / max(need_neg, 1))
    if factor < 1.0:
        shrunk = [int(math.floor(n * factor)) for n in sizes]
        LOGGER.warning(
            "only %d adult positives / %d negatives: split sizes %s shrink to %s", n_positive, n_negative, list(sizes), shrunk
        )
        wanted = [(n // 2, n - n // 2) for n in shrunk]
    return wanted


def plan_rsna_split(
    labels: Mapping[str, int],
    ages: Mapping[str, float | None],
    seed: int = 0,
    sizes: Sequence[int] = PAPER_SPLIT_SIZES,
    min_age: float = ADULT_AGE_YEARS,
) -> tuple[dict[str, str], dict[str, str]]:
    """The paper's RSNA split as a pure function of labels and ages.

    Args:
        labels: patientId -> 0/1.
        ages: patientId -> age in years (None = unknown). Patients absent from ``ages`` count as unknown.
        seed: seed of the selection and the shuffle.
        sizes: training, validation, test sizes (balanced positive/negative within each).
        min_age: adults are ``age >= min_age``.

    Returns:
        (patientId -> split for the selected patients, patientId -> exclusion reason for the others).
    """
    excluded: dict[str, str] = {}
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for patient_id in sorted(labels):
        age = ages.get(patient_id)
        if age is None or (isinstance(age, float) and math.isnan(age)):
            excluded[patient_id] = "no PatientAge in the DICOM header"
        elif age < min_age:
            excluded[patient_id] = f"pediatric (PatientAge < {min_age:g} years)"
        else:
            by_label[int(labels[patient_id])].append(patient_id)
    wanted = balanced_split_sizes(len(by_label[1]), len(by_label[0]), sizes)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label, column in ((1, 0), (0, 1)):
        pool = by_label[label]
        order = rng.permutation(len(pool))
        start = 0
        for split, counts in zip(("training", "validation", "test"), wanted):
            for index in order[start : start + counts[column]]:
                assignment[pool[index]] = split
            start += counts[column]
        for index in order[start:]:
            excluded[pool[index]] = "not drawn for the balanced split"
    return assignment, excluded


def convert_rsna(
    labels_csv: str | Path,
    dicom_dir: str | Path,
    class_info_csv: str | Path | None = None,
    seed: int = 0,
    sizes: Sequence[int] = PAPER_SPLIT_SIZES,
    min_age: float = ADULT_AGE_YEARS,
    progress: bool = True,
) -> Conversion:
    """Build datalist items for the RSNA challenge set.

    Returns:
        (items with a ``split`` key, excluded ``{"image", "reason"}`` rows).
        Items: ``image`` (absolute DICOM path), ``label``, ``boxes`` (``[]`` for negatives), ``patient_id``,
        ``view``, ``detailed_class``, ``age``, ``rows``, ``columns``, ``source = "rsna"``.
    """
    from tqdm import tqdm

    dicom_dir = Path(dicom_dir).resolve()
    if not dicom_dir.is_dir():
        raise ValueError(f"DICOM folder not found: {dicom_dir}")
    patients = read_rsna_labels(labels_csv, class_info_csv)
    headers: dict[str, dict[str, Any]] = {}
    excluded: list[dict[str, str]] = []
    for patient_id in tqdm(patients, desc="RSNA headers", unit="dcm", disable=not progress):
        path = dicom_dir / f"{patient_id}.dcm"
        if not path.is_file():
            excluded.append({"image": str(path), "reason": "DICOM file missing"})
            continue
        try:
            headers[patient_id] = read_dicom_header(path)
        except Exception as error:  # pydicom raises many types for broken files
            excluded.append({"image": str(path), "reason": f"unreadable DICOM ({type(error).__name__})"})
    labels = {pid: patients[pid].label for pid in headers}
    ages = {pid: headers[pid]["age"] for pid in headers}
    assignment, reasons = plan_rsna_split(labels, ages, seed=seed, sizes=sizes, min_age=min_age)
    excluded += [{"image": str(dicom_dir / f"{pid}.dcm"), "reason": reason} for pid, reason in sorted(reasons.items())]
    items: list[dict[str, Any]] = []
    for patient_id, split in assignment.items():
        patient, header = patients[patient_id], headers[patient_id]
        sx = header["columns"] / RSNA_REFERENCE_SIZE if header["columns"] else 1.0
        sy = header["rows"] / RSNA_REFERENCE_SIZE if header["rows"] else 1.0
        boxes = [[round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)] for x0, y0, x1, y1 in patient.boxes]
        items.append(
            {
                "image": str(dicom_dir / f"{patient_id}.dcm"),
                "label": patient.label,
                "boxes": boxes,
                "patient_id": patient_id,
                "view": header["view"],
                "detailed_class": patient.detailed_class,
                "age": header["age"],
                "rows": header["rows"],
                "columns": header["columns"],
                "source": "rsna",
                "split": split,
            }
        )
    items.sort(key=lambda item: (item["split"], item["patient_id"]))
    return items, excluded


__all__ = [
    "PAPER_SPLIT_SIZES",
    "RsnaPatient",
    "balanced_split_sizes",
    "convert_rsna",
    "parse_dicom_age",
    "plan_rsna_split",
    "read_dicom_header",
    "read_rsna_labels",
]
