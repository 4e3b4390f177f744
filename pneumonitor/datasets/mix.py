"""The training mix for the shipped weights: one DLNet datalist and one LSNet datalist from every local dataset.

DLNet (detection + localization) items, from
* the COVID-19 Image Data Collection, frontal views with a known finding: positives (every pneumonia finding) and
  negatives (``No Finding``, and every image whose expert geographic-extent score is 0: a COVID-19 patient without a
  visible opacity is a negative for DLNet, whose label means "pneumonia visible", as RSNA's "Lung Opacity" does;
  ``finding`` keeps the diagnosis and ``relabelled`` says why); the 78 radiologist-annotated images bring pneumonia
  masks and boxes. These are the only adult negatives that share a source with the adult positives, which is why
  the bundle's training sampler weights each (source, label) group equally
  (:func:`pneumonitor.training.group_balanced_weights`);
* the pediatric set: normals (negatives) and bacterial/viral pneumonias (positives, no localization);
* JSRT: negatives (nodules or normal, no pneumonia).

Every DLNet item has the same keys, so MONAI's collate works after the trainer renders targets:
``image, label (0/1), boxes ([[x0,y0,x1,y1], ...] end-exclusive pixels; [] for negatives and for positives without
localization), mask (pneumonia mask PNG path or ""), has_localization (1 when boxes/mask are the complete truth:
negatives and radiologist-annotated positives; 0 for positives whose location is unknown), patient_id
("<source>:<id>", unique across datasets), source``.

LSNet items: ``image, label (lung mask PNG), ignore_value (127: V7 "ignore" pixels; other masks never hold 127),
patient_id, source`` from V7 human masks, radiologist (GeneralBlockchain) right ∪ left masks, lungVAE masks (model
output; only for images without a human mask), JSRT right ∪ left.

Splits: each dataset is split by patient, stratified by label, with the same seed and fractions; patients never
cross datasets, so the union is patient-level too, and an image's DLNet and LSNet items share the same split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pneumonitor.datasets.covid_collection import convert_covid_collection
from pneumonitor.datasets.jsrt import convert_jsrt
from pneumonitor.datasets.pediatric import convert_pediatric
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS, check_fractions

MIX_KEYS = ("image", "label", "boxes", "mask", "has_localization", "patient_id", "source", "relabelled", "split")


def dlnet_label(item: dict[str, Any]) -> tuple[int, str]:
    """(label, reason it differs from the converter's label or ""): expert extent 0 -> no visible pneumonia."""
    label = int(item["label"])
    severity = item.get("severity")
    if label == 1 and severity is not None and float(severity) == 0.0:
        return 0, f"expert geographic extent 0 ({item.get('severity_source', 'score')})"
    return label, ""


def _dlnet_item(item: dict[str, Any]) -> dict[str, Any]:
    has_mask = bool(item.get("mask"))
    label, relabelled = dlnet_label(item)
    return {
        "image": item["image"],
        "label": label,
        "boxes": item.get("boxes", []) if label == 1 else [],
        "mask": item.get("mask", "") if label == 1 else "",
        "has_localization": int(label == 0 or has_mask),
        "patient_id": f"{item['source']}:{item['patient_id']}",
        "source": item["source"],
        "relabelled": relabelled,
        "split": item["split"],
    }


def build_training_mix(
    data_root: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    closing_radius: int = 5,
    include: Sequence[str] = ("covid-collection", "pediatric", "jsrt"),
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, str]]]:
    """(dlnet_items, lsnet_items, excluded) for the datasets under ``data_root`` (``/work/shared/data`` layout).

    Datasets whose folder is missing are skipped with a logged warning (and an ``excluded`` row).
    """
    import logging

    logger = logging.getLogger(__name__)
    check_fractions(fractions)
    data_root, out_dir = Path(data_root).resolve(), Path(out_dir).resolve()
    folders = {"covid-collection": "covid-chestxray-dataset", "pediatric": "pediatric-pneumonia", "jsrt": "jsrt-scr"}
    unknown = set(include) - set(folders)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; choose from {sorted(folders)}")
    dlnet: list[dict[str, Any]] = []
    lsnet: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for name in include:
        folder = data_root / folders[name]
        if not (folder / "manifest.csv").is_file():
            logger.warning("skipping %s: %s/manifest.csv not found", name, folder)
            excluded.append({"image": str(folder), "reason": f"dataset {name} not found"})
            continue
        if name == "covid-collection":
            items, ls_items, rejected = convert_covid_collection(
                folder, out_dir, seed=seed, fractions=fractions, closing_radius=closing_radius, progress=progress
            )
        elif name == "pediatric":
            (items, rejected), ls_items = convert_pediatric(folder, seed=seed, fractions=fractions), []
        else:
            items, ls_items, rejected = convert_jsrt(folder, out_dir, seed=seed, fractions=fractions, progress=progress)
        dlnet += [_dlnet_item(item) for item in items]
        lsnet += [{**it, "patient_id": f"{name}:{it['patient_id']}"} for it in ls_items]
        excluded += rejected
    return dlnet, lsnet, excluded


__all__ = ["MIX_KEYS", "build_training_mix", "dlnet_label"]
