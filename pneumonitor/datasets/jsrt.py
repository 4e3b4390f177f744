"""JSRT radiographs with SCR lung masks -> MONAI datalists (pneumonia-negative images and lung segmentation).

JSRT images contain lung nodules or nothing, never pneumonia: every image is a negative (``label`` 0).
The lung mask is the union of the SCR right and left lung masks, written as 0/255 PNG to
``OUT/masks/jsrt-lungs/<stem>.png`` (JSRT may not be redistributed: keep the output folder private). One image per
patient. The SCR masks keep the patient's side (``right_lung`` is on the image left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.datalist import ConversionWithLungs, convert_manifest
from pneumonitor.datasets.images import read_gray
from pneumonitor.publishing import write_png
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS

SOURCE = "jsrt"


def convert_jsrt(
    root: str | Path, out_dir: str | Path, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
    progress: bool = True,
) -> ConversionWithLungs:
    """(items, lsnet_items, excluded). Items: ``image, label=0, lung_mask, lung_mask_right, lung_mask_left,
    patient_id, finding ("nodule"/"normal"), source="jsrt", split``; LSNet items: ``image, label=<lung mask>``."""
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()

    def item_fields(image: Path, row: dict[str, str]) -> dict[str, Any] | str:
        right, left = root / row["mask_right_lung"], root / row["mask_left_lung"]
        if not (right.is_file() and left.is_file()):
            return "lung mask file missing"
        union = (read_gray(right) > 0) | (read_gray(left) > 0)
        lung_mask = write_png(out_dir / "masks" / "jsrt-lungs" / f"{image.stem}.png", union)
        return {
            "label": 0,
            "lung_mask": str(lung_mask),
            "lung_mask_source": "jsrt-scr",
            "lung_mask_right": str(right),
            "lung_mask_left": str(left),
            "patient_id": image.stem,
            "finding": "nodule" if row.get("nodule") == "True" else "normal",
            "source": SOURCE,
        }

    items, excluded = convert_manifest(root, "jsrt-scr", item_fields, seed, fractions, "image", progress)
    lsnet_items = [
        {"image": it["image"], "label": it["lung_mask"], "patient_id": it["patient_id"], "source": SOURCE,
         "ignore_value": 127, "split": it["split"]}
        for it in items
    ]
    return items, lsnet_items, excluded


__all__ = ["convert_jsrt"]
