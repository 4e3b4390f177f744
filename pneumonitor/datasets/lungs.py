"""Lung masks for DLNet training items that have no human one, predicted by the shipped LSNet.

DLNet's weak localization terms need the lungs of every image ("no heatmap outside the lungs" for positives whose
lesions are not outlined, the expert extent as a fraction of the lungs). Human masks (radiologist, V7, JSRT SCR) are
used where they exist; every other item gets LSNet's mask, thresholded at 0.5, holes filled and reduced to the two
lungs (:func:`pneumonitor.severity.split_lungs`), written as a 0/255 PNG at LSNet's input size (the DLNet target
transform pools it to its map grid, so only the field of view must match the image's); ``lung_region_source``
marks the predicted ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from pneumonitor.publishing import write_png

LSNET_SOURCE = "lsnet"


def _mask_path(out_dir: Path, image: str) -> Path:
    # one file per image path: different datasets reuse file names
    digest = hashlib.sha1(image.encode()).hexdigest()[:12]
    return out_dir / f"{Path(image).stem}_{digest}.png"


def predict_lung_masks(
    items: Sequence[dict[str, Any]],
    lsnet: str | Path,
    out_dir: str | Path,
    batch_size: int = 16,
    progress: bool = True,
    key: str = "lung_region",
) -> int:
    """Give every positive item without ``key`` an LSNet-predicted lung mask path (in place); returns how many
    were predicted. Negatives are skipped: their localization target is known (empty everywhere), so the weak terms
    that need the lungs never apply to them.

    Masks already on disk (an earlier run with the same weights folder) are reused.
    """
    from tqdm import tqdm

    from pneumonitor.networks.bundle import load_bundle
    from pneumonitor.severity import split_lungs
    from pneumonitor.transforms.loading import LoadRadiograph
    from pneumonitor.transforms.presets import lsnet_preprocess

    out_dir = Path(out_dir).resolve()
    todo = [item for item in items if not item.get(key) and int(item.get("label", 0)) == 1]
    pending = [item for item in todo if not _mask_path(out_dir, item["image"]).is_file()]
    if pending:
        loaded = load_bundle(lsnet, kind="LSNet")
        load, preprocess = LoadRadiograph(), lsnet_preprocess(loaded.image_size)
        for start in tqdm(range(0, len(pending), batch_size), desc="LSNet lung masks", unit="batch",
                          disable=not progress):
            chunk = pending[start:start + batch_size]
            batch = torch.stack([torch.as_tensor(preprocess(load(item["image"]))).float() for item in chunk])
            with torch.inference_mode():
                probability = torch.sigmoid(loaded.network(batch))[:, 0].numpy()
            for item, lung in zip(chunk, probability):
                right, left = split_lungs(ndimage.binary_fill_holes(lung >= 0.5))
                write_png(_mask_path(out_dir, item["image"]), (right | left).astype(np.uint8) * 255)
    for item in todo:
        item[key] = str(_mask_path(out_dir, item["image"]))
        item[f"{key}_source"] = LSNET_SOURCE
    return len(pending)


__all__ = ["LSNET_SOURCE", "predict_lung_masks"]
