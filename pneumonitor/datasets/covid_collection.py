"""COVID-19 Image Data Collection (Cohen et al.) with all its public annotations -> MONAI datalists.

Reads the collection's ``manifest.csv`` (one row per stored PNG, with patient id, day offset, view, finding, scores
and mask paths) and the annotation CSVs under ``annotations/``. Rules:

* frontal views only: ``view`` in ``PA``, ``AP``, ``AP Supine``; lateral (``L``), unknown (``?``/empty) views, CT
  rows (not stored) and images that are not in ``metadata.csv`` are excluded with their reason;
* pneumonia label: 0 for ``No Finding``, 1 for every other finding of the collection (COVID-19, SARS, bacterial,
  fungal, viral, lipoid pneumonias, ARDS); ``todo``/empty findings have no label: such images go only to the lung
  segmentation datalist;
* severity: ``severity`` = official geographic extent (``covid-severity-scores.csv``, mean of 3 raters, 0-8) when
  present, else COVIDx-S ``Geographic`` (same 0-8 scale; identical on the 94 shared images); ``severity_source`` says
  which; both raw values and the opacity scores are kept; Brixia zone scores (A-C right lung, D-F left lung, 0-3 each)
  per rater;
* radiologist masks (GeneralBlockchain): pneumonia mask = ground-glass opacities ∪ consolidation (an image annotated
  with neither has an empty mask), written to ``OUT/masks/pneumonia/<stem>.png`` (0/255); boxes from it with
  ``boxes_from_mask`` (closing radius ``closing_radius`` px, see ``pneumonitor.datasets.bounding_boxes``; regions smaller
  than 0.01 % of the image are dropped); per-lung involvement
  ``involvement_right/left/total`` = ``pneumonitor.severity.pneumonia_ratio`` of the pneumonia mask in the radiologist
  right/left lung masks, and ``severity_right/left`` = ``lung_score`` of those (mask-derived, 0-4 each);
  the three ``ciaa199.pdf-001-*`` images were annotated on a larger copy, so their item uses that copy
  (``image_gb_version.png``) as the image;
* lung masks: ``lung_mask`` is the best available: radiologist (GeneralBlockchain right ∪ left, written to
  ``OUT/masks/lungs/<stem>.png``) > V7 human masks (0/127/255 with 127 = ignore, recorded as
  ``lung_mask_ignore_value``) > lungVAE (model output); ``lung_mask_source`` says which;
* lung boxes (imageannotation.ai, rescaled to the stored PNGs): ``lung_box_right``/``lung_box_left``
  ``[x0, y0, x1, y1]`` (the patient's right lung is on the image left);
* patient-level, label-stratified, seeded splits (``pneumonitor.datasets.splits``), shared by both datalists.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pneumonitor.datasets.bounding_boxes import boxes_from_mask
from pneumonitor.datasets.datalist import ConversionWithLungs
from pneumonitor.datasets.images import read_gray
from pneumonitor.publishing import write_png
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS, assign_splits

LOGGER = logging.getLogger(__name__)

SOURCE = "covid-collection"
FRONTAL_VIEWS = ("PA", "AP", "AP Supine")
NEGATIVE_FINDINGS = ("No Finding",)
UNKNOWN_FINDINGS = ("todo", "Unknown", "")
V7_IGNORE_VALUE = 127
PNEUMONIA_CLASSES = ("ground_glass_opacities", "consolidation")
GB_IMAGE_COPY = "image_gb_version.png"
MIN_BOX_AREA_FRACTION = 1e-4


def pneumonia_label(finding: Any) -> int | None:
    """0 for ``No Finding``, None for unknown findings (``todo``/empty), 1 otherwise."""
    if finding is None or (isinstance(finding, float) and math.isnan(finding)):
        return None
    finding = str(finding).strip()
    if finding in UNKNOWN_FINDINGS:
        return None
    return 0 if finding in NEGATIVE_FINDINGS else 1


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_brixia(path: Path) -> dict[str, dict[str, Any]]:
    """Brixia zone scores per original file name: ``{"S": [A..F], "J": [A..F]}`` plus per-lung sums (A-C right)."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path, encoding="utf-8-sig")
    out: dict[str, dict[str, Any]] = {}
    for _, row in table.iterrows():
        entry: dict[str, Any] = {}
        right, left = [], []
        for rater in ("S", "J"):
            zones = [_number(row.get(f"{rater}-{zone}")) for zone in "ABCDEF"]
            if any(z is None for z in zones):
                continue
            entry[f"brixia_{rater}"] = [int(z) for z in zones]
            right.append(sum(zones[:3]))
            left.append(sum(zones[3:]))
        if right:
            entry["brixia_right"] = float(np.mean(right))
            entry["brixia_left"] = float(np.mean(left))
            entry["brixia_global"] = entry["brixia_right"] + entry["brixia_left"]
            out[str(row["filename"])] = entry
    return out


def read_lung_boxes(path: Path) -> dict[str, dict[str, list[float]]]:
    """Right/left lung boxes (imageannotation.ai, COCO, rescaled to the stored PNGs) per stored file path.

    Returns ``{"images/<name>.png": {"lung_box_right": [x0, y0, x1, y1], "lung_box_left": [...]}}``.
    """
    if not path.is_file():
        return {}
    coco = json.loads(path.read_text())
    files = {image["id"]: image["file_name"] for image in coco.get("images", [])}
    names = {category["id"]: category["name"] for category in coco.get("categories", [])}
    out: dict[str, dict[str, list[float]]] = {}
    for annotation in coco.get("annotations", []):
        side = {"Right Lung": "right", "Left Lung": "left"}.get(names.get(annotation["category_id"], ""))
        if side is None or annotation["image_id"] not in files:
            continue
        x, y, width, height = (float(v) for v in annotation["bbox"])
        out.setdefault(files[annotation["image_id"]], {})[f"lung_box_{side}"] = [x, y, x + width, y + height]
    return out


def radiologist_masks(gb_dir: Path, out_dir: Path, stem: str, closing_radius: int) -> dict[str, Any]:
    """Pneumonia mask, boxes, lung mask and per-lung involvement from one GeneralBlockchain mask folder.

    Returns the item fields (paths absolute). Lungs: patient's right lung = ``right_lung.png``.
    """
    from pneumonitor.severity import lung_score, pneumonia_ratio

    right_path, left_path = gb_dir / "right_lung.png", gb_dir / "left_lung.png"
    fields: dict[str, Any] = {}
    shape = None
    lungs: dict[str, np.ndarray] = {}
    for side, path in (("right", right_path), ("left", left_path)):
        if path.is_file():
            lungs[side] = read_gray(path) > 0
            shape = lungs[side].shape
            fields[f"lung_mask_{side}"] = str(path)
    pneumonia = None
    for name in PNEUMONIA_CLASSES:
        path = gb_dir / f"{name}.png"
        if path.is_file():
            layer = read_gray(path) > 0
            pneumonia = layer if pneumonia is None else pneumonia | layer
            shape = layer.shape
    if shape is None:
        return {}
    if pneumonia is None:  # annotated image with no ground glass and no consolidation: no pneumonia region
        pneumonia = np.zeros(shape, dtype=bool)
    mask_path = write_png(out_dir / "masks" / "pneumonia" / f"{stem}.png", pneumonia)
    fields["mask"] = str(mask_path)
    # speckles under 0.01 % of the image (stray brush strokes) are not findings
    min_area = max(1, int(round(MIN_BOX_AREA_FRACTION * pneumonia.size)))
    fields["boxes"] = boxes_from_mask(pneumonia, closing_radius=closing_radius, min_area=min_area)
    if lungs:
        union = np.zeros(shape, dtype=bool)
        for lung in lungs.values():
            union |= lung
        fields["lung_mask_radiologist"] = str(write_png(out_dir / "masks" / "lungs" / f"{stem}.png", union))
        total = pneumonia_ratio(pneumonia, union)
        fields["involvement_total"] = None if math.isnan(total) else round(float(total), 3)
    if len(lungs) == 2:
        for side in ("right", "left"):
            ratio = pneumonia_ratio(pneumonia, lungs[side])
            if not math.isnan(ratio):
                fields[f"involvement_{side}"] = round(float(ratio), 3)
                fields[f"severity_{side}"] = int(lung_score(ratio))
    return fields


def convert_covid_collection(
    root: str | Path, out_dir: str | Path, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
    closing_radius: int = 5, progress: bool = True,
) -> ConversionWithLungs:
    """Build the classification/localization/severity items and the lung-segmentation items.

    Args:
        root: the collection folder (holding ``manifest.csv``, ``images/``, ``annotations/``).
        out_dir: where derived masks are written (``masks/pneumonia``, ``masks/lungs``).
        seed, fractions: patient-level split (see ``pneumonitor.datasets.splits``).
        closing_radius: box merging radius in pixels (``boxes_from_mask``).

    Returns:
        (items, lsnet_items, excluded); items carry ``split``.
    """
    from tqdm import tqdm

    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: is {root} the covid-chestxray-dataset folder?")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    official = {}
    severity_csv = root / "annotations" / "covid-severity-scores.csv"
    if severity_csv.is_file():
        scores = pd.read_csv(severity_csv, comment="#")
        official = {str(r.filename): (float(r.geographic_mean), float(r.opacity_mean)) for r in scores.itertuples()}
    brixia = read_brixia(root / "annotations" / "brixia-public-annotations.csv")
    lung_boxes = read_lung_boxes(root / "annotations" / "imageannotation_ai_lung_bounding_boxes.rescaled.json")

    items: list[dict[str, Any]] = []
    lsnet_items: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for row in tqdm(manifest.to_dict("records"), desc="COVID collection", unit="img", disable=not progress):
        image = root / row["stored_file"]
        if row["in_metadata"] != "1" or not row["patientid"]:
            excluded.append({"image": str(image), "reason": "not in metadata.csv (no patient id or view)"})
            continue
        if row["view"] not in FRONTAL_VIEWS:
            excluded.append({"image": str(image), "reason": f"not a frontal view (view {row['view'] or 'missing'!r})"})
            continue
        if not image.is_file():
            excluded.append({"image": str(image), "reason": "image file missing"})
            continue
        stem = Path(row["stored_file"]).stem
        item: dict[str, Any] = {
            "image": str(image),
            "patient_id": row["patientid"],
            "offset_days": _number(row["offset"]),
            "view": row["view"],
            "finding": row["finding"],
            "source": SOURCE,
        }
        label = pneumonia_label(row["finding"])
        if label is not None:
            item["label"] = label
        geographic, opacity = official.get(row["original_file"], (None, None))
        covidx = _number(row["covidnet_geographic"])
        if geographic is not None:
            item.update(severity=geographic, severity_source="cohen2020", severity_official=geographic,
                        opacity_official=opacity)
        elif covidx is not None:
            item.update(severity=covidx, severity_source="covidx-s")
        if covidx is not None:
            item.update(severity_covidx=covidx, opacity_covidx=_number(row["covidnet_opacity"]))
        item.update(brixia.get(row["original_file"], {}))
        item.update(lung_boxes.get(row["stored_file"], {}))
        lung_choice: tuple[str, str] | None = None
        if row["gb_masks"]:
            gb_dir = root / row["gb_masks"]
            if (gb_dir / GB_IMAGE_COPY).is_file():  # masks are aligned to GeneralBlockchain's own (larger) copy
                item["image"] = str(gb_dir / GB_IMAGE_COPY)
                item.pop("lung_box_right", None)  # those boxes refer to images/, not to this copy
                item.pop("lung_box_left", None)
            fields = radiologist_masks(gb_dir, out_dir, stem, closing_radius)
            item.update(fields)
            if "lung_mask_radiologist" in fields:
                lung_choice = (fields["lung_mask_radiologist"], "radiologist")
        if row["v7_lung_mask"]:
            item["lung_mask_v7"] = str(root / row["v7_lung_mask"])
            if lung_choice is None and "image_gb_version" not in item["image"]:
                lung_choice = (item["lung_mask_v7"], "v7")
        if row["lungVAE_mask"]:
            item["lung_mask_lungvae"] = str(root / row["lungVAE_mask"])
            if lung_choice is None and "image_gb_version" not in item["image"]:
                lung_choice = (item["lung_mask_lungvae"], "lungvae")
        if lung_choice is not None:
            item["lung_mask"], item["lung_mask_source"] = lung_choice
            if lung_choice[1] == "v7":
                item["lung_mask_ignore_value"] = V7_IGNORE_VALUE
        items.append(item)
    assign_splits(items, fractions=fractions, seed=seed)
    for item in items:
        if "lung_mask" in item:
            lsnet_items.append(
                {
                    "image": item["image"],
                    "label": item["lung_mask"],
                    "patient_id": item["patient_id"],
                    "source": f"{SOURCE}/{item['lung_mask_source']}",
                    "ignore_value": V7_IGNORE_VALUE,
                    "split": item["split"],
                }
            )
    labelled = []
    for item in items:
        if "label" in item:
            labelled.append(item)
        else:
            excluded.append({"image": item["image"], "reason": f"finding {item['finding']!r}: no pneumonia label (lung masks still used)"})
    return labelled, lsnet_items, excluded


__all__ = ["FRONTAL_VIEWS", "convert_covid_collection", "pneumonia_label", "radiologist_masks", "read_brixia",
           "read_lung_boxes"]
