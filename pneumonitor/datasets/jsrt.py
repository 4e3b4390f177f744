"""JSRT radiographs with SCR lung masks -> MONAI datalists (pneumonia-negative images and lung segmentation).

JSRT images contain lung nodules or nothing, never pneumonia: every image is a negative (``label`` 0).
The lung mask is the union of the SCR right and left lung masks, written as 0/255 PNG to
``OUT/masks/jsrt-lungs/<stem>.png`` (JSRT may not be redistributed: keep the output folder private). One image per
patient. The SCR masks keep the patient's side (``right_lung`` is on the image left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from pneumonitor.datasets.images import read_gray
from pneumonitor.publishing import write_png
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS, assign_splits

SOURCE = "jsrt"


def convert_jsrt(
    root: str | Path, out_dir: str | Path, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, str]]]:
    """(items, lsnet_items, excluded). Items: ``image, label=0, lung_mask, lung_mask_right, lung_mask_left,
    patient_id, finding ("nodule"/"normal"), source="jsrt", split``; LSNet items: ``image, label=<lung mask>``."""
    from tqdm import tqdm

    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: is {root} the jsrt-scr folder?")
    table = pd.read_csv(manifest_path, dtype=str)
    items: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for row in tqdm(table.to_dict("records"), desc="JSRT", unit="img", disable=not progress):
        image = root / row["image"]
        right, left = root / row["mask_right_lung"], root / row["mask_left_lung"]
        if not (image.is_file() and right.is_file() and left.is_file()):
            excluded.append({"image": str(image), "reason": "image or lung mask file missing"})
            continue
        union = (read_gray(right) > 0) | (read_gray(left) > 0)
        lung_mask = write_png(out_dir / "masks" / "jsrt-lungs" / f"{image.stem}.png", union)
        items.append(
            {
                "image": str(image),
                "label": 0,
                "lung_mask": str(lung_mask),
                "lung_mask_source": "jsrt-scr",
                "lung_mask_right": str(right),
                "lung_mask_left": str(left),
                "patient_id": image.stem,
                "finding": "nodule" if str(row.get("nodule")) == "True" else "normal",
                "source": SOURCE,
            }
        )
    assign_splits(items, fractions=fractions, seed=seed)
    lsnet_items = [
        {"image": it["image"], "label": it["lung_mask"], "patient_id": it["patient_id"], "source": SOURCE,
         "ignore_value": 127, "split": it["split"]}
        for it in items
    ]
    return items, lsnet_items, excluded


__all__ = ["convert_jsrt"]
