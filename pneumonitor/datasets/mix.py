"""The training mix for the shipped weights: one DLNet datalist and one LSNet datalist from every local dataset.

DLNet (detection + localization) items, from
* the COVID-19 Image Data Collection, frontal views with a known finding: positives (every pneumonia finding) and
  negatives (``No Finding``, and every image whose expert geographic-extent score is 0: a COVID-19 patient without a
  visible opacity is a negative for DLNet, whose label means "pneumonia visible", as RSNA's "Lung Opacity" does;
  ``finding`` keeps the diagnosis and ``relabelled`` says why); the 78 radiologist-annotated images bring pneumonia
  masks and boxes. These are the only adult negatives that share a source with the adult positives, which is why
  the bundle's training sampler weights each (source, label) group equally
  (:func:`pneumonitor.engines.group_balanced_weights`);
* the pediatric set: normals (negatives) and bacterial/viral pneumonias (positives, no localization);
* JSRT: negatives (nodules or normal, no pneumonia);
* the NIH ChestX-ray8 subset: adult "No Finding" negatives and "Pneumonia" positives (a few with NIH pneumonia boxes);
* the RSNA-derived adult normals (negatives; the paper's own source);
* Hannover: adult COVID-19 positives (mostly ICU AP) without location, with their clinical course;
* COVIDx-S extra (Actualmed, Figure 1): adult COVID-19 positives with expert extent scores (validation and test only:
  with the collection's own validation patients they give the >= 30 scored validation images the heatmap threshold
  is chosen on).

Adult normals thus come from four sources (NIH, RSNA, JSRT, the collection) and adult positives from four (NIH, the
collection, Hannover, COVIDx-S extra), so no source predicts the label.

Every DLNet item has the same keys, so MONAI's collate works after the trainer renders targets:
``image, label (0/1), boxes ([[x0,y0,x1,y1], ...] end-exclusive pixels; [] for negatives and for positives without
localization), mask (pneumonia mask PNG path or ""), has_localization (1 when boxes/mask are the complete truth:
negatives and radiologist-annotated positives; 0 for positives whose location is unknown), patient_id
("<source>:<id>", unique across datasets), source, lung_region`` (a human lung mask PNG, or "" until
:func:`pneumonitor.datasets.lungs.predict_lung_masks` fills it from LSNet), ``extent`` (the expert geographic extent
0-8, -1 when unknown: weak supervision of the heatmap's area) and whatever evaluation fields the converter gave
(``severity*``, ``involvement_*``, ``offset_days``, the Hannover clinical course, ...).

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
from pneumonitor.datasets.covidx_severity import convert_covidx_severity
from pneumonitor.datasets.datalist import ConversionWithLungs
from pneumonitor.datasets.hannover import convert_hannover
from pneumonitor.datasets.jsrt import convert_jsrt
from pneumonitor.datasets.nih import convert_nih
from pneumonitor.datasets.pediatric import convert_pediatric
from pneumonitor.datasets.rsna_normals import convert_rsna_normals
from pneumonitor.datasets.splits import DEFAULT_FRACTIONS, check_fractions

MIX_KEYS = ("image", "label", "boxes", "mask", "has_localization", "patient_id", "source", "relabelled", "split",
            "lung_region", "extent")
#: converter fields kept for evaluation (severity against experts, per-lung involvement, monitoring, clinical course)
EVALUATION_KEYS = ("severity", "severity_source", "severity_official", "severity_covidx", "severity_right",
                   "severity_left", "lung_mask", "involvement_right", "involvement_left", "involvement_total", "lung_mask_source",
                   "offset_days", "view", "finding", "age", "icu", "icu_at_exam", "died", "admission_offset",
                   "icu_admission_offset", "icu_release_offset", "death_offset")
DATASET_FOLDERS = {
    "covid-collection": "covid-chestxray-dataset", "pediatric": "pediatric-pneumonia", "jsrt": "jsrt-scr",
    "nih": "nih-chestxray-subset", "rsna-normals": "rsna-normals-224", "hannover": "hannover-covid",
    "covidx-extra": "covidx-severity-extra",
}
DEFAULT_INCLUDE = tuple(DATASET_FOLDERS)
#: COVIDx-S extra is for measuring, never trained on: half its patients validate, half test
COVIDX_EXTRA_FRACTIONS = (0.0, 0.5, 0.5)


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
    boxes = item.get("boxes", []) if label == 1 else []
    severity = item.get("severity")
    kept = {key: item[key] for key in EVALUATION_KEYS if item.get(key) is not None}
    return {
        **kept,
        "image": item["image"],
        "label": label,
        "boxes": boxes,
        "mask": item.get("mask", "") if label == 1 else "",
        # NIH pneumonia boxes localize like the paper's RSNA boxes (stage 1 trains on boxes)
        "has_localization": int(label == 0 or has_mask or (item["source"] == "nih" and bool(boxes))),
        "patient_id": f"{item['source']}:{item['patient_id']}",
        "source": item["source"],
        "relabelled": relabelled,
        "split": item["split"],
        # the lungs DLNet's weak terms use: the human mask here, LSNet's later (``lung_mask`` stays human-only: the
        # evaluation's lung Dice must never compare LSNet with itself)
        "lung_region": item.get("lung_mask", ""),
        "extent": float(severity) if severity is not None else -1.0,
    }


def build_training_mix(
    data_root: str | Path, out_dir: str | Path, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
    closing_radius: int = 5, include: Sequence[str] = DEFAULT_INCLUDE, progress: bool = True,
) -> ConversionWithLungs:
    """(dlnet_items, lsnet_items, excluded) for the datasets under ``data_root`` (``/work/shared/data`` layout).

    Datasets whose folder is missing are skipped with a logged warning (and an ``excluded`` row).
    """
    import logging

    logger = logging.getLogger(__name__)
    check_fractions(fractions)
    data_root, out_dir = Path(data_root).resolve(), Path(out_dir).resolve()
    folders = DATASET_FOLDERS
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
        elif name == "jsrt":
            items, ls_items, rejected = convert_jsrt(folder, out_dir, seed=seed, fractions=fractions, progress=progress)
        else:  # the adult sets keep their own split fractions (more validation/test patients); no lung masks
            convert = {"nih": convert_nih, "rsna-normals": convert_rsna_normals, "hannover": convert_hannover,
                       "covidx-extra": lambda f, seed: convert_covidx_severity(f, seed, COVIDX_EXTRA_FRACTIONS)}[name]
            (items, rejected), ls_items = convert(folder, seed=seed), []
            if name == "covidx-extra":  # rounding an odd patient count leaves one in training: it validates
                for item in items:
                    item["split"] = "validation" if item["split"] == "training" else item["split"]
        dlnet += [_dlnet_item(item) for item in items]
        lsnet += [{**it, "patient_id": f"{name}:{it['patient_id']}"} for it in ls_items]
        excluded += rejected
    return dlnet, lsnet, excluded


__all__ = ["DEFAULT_INCLUDE", "EVALUATION_KEYS", "MIX_KEYS", "build_training_mix", "dlnet_label"]
