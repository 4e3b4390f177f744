"""MONAI datalist JSON: writing (through :mod:`pneumonitor.publishing`), loading, and per-split summaries.

A datalist is MONAI's decathlon layout, ``{"training": [...], "validation": [...], "test": [...]}``, loadable with
``monai.data.load_decathlon_datalist(path, data_list_key="training")``. Every image and mask path is absolute, so the
file works from any working directory; the dataset root is recorded under ``"dataset_dir"``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pneumonitor.publishing import write_json

SPLITS: tuple[str, str, str] = ("training", "validation", "test")
#: what a one-datalist converter returns: the items (each with its ``split``) and the excluded rows (image, reason)
Conversion = tuple[list[dict[str, Any]], list[dict[str, str]]]
#: a converter that also gives LSNet items (image, label = lung mask): (items, lsnet_items, excluded)
ConversionWithLungs = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, str]]]


def manifest_rows(
    root: str | os.PathLike, folder_name: str, image_column: str = "stored_file"
) -> tuple[list[tuple[Path, dict[str, str]]], list[dict[str, str]]]:
    """``(image path, row)`` for every ``manifest.csv`` row of a ``../shared/data`` folder whose image (the file
    ``image_column`` names) exists, and an ``excluded`` row ("image file missing") for the others; cells are strings
    ("" when empty).

    Raises:
        ValueError: no manifest.csv under ``root`` (``folder_name`` says which folder was expected).
    """
    import pandas as pd

    root = Path(root).resolve()
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: is {root} the {folder_name} folder?")
    rows, excluded = [], []
    for row in pd.read_csv(manifest_path, dtype=str, keep_default_na=False).to_dict("records"):
        image = root / row[image_column]
        if image.is_file():
            rows.append((image, row))
        else:
            excluded.append({"image": str(image), "reason": "image file missing"})
    return rows, excluded


def convert_manifest(
    root: str | os.PathLike,
    folder_name: str,
    item_fields: Callable[[Path, dict[str, str]], dict[str, Any] | str],
    seed: int,
    fractions: Sequence[float],
    image_column: str = "stored_file",
    progress: bool = False,
) -> Conversion:
    """The converter of a ``manifest.csv`` dataset folder (see :func:`manifest_rows`): an item
    ``{"image": path, **item_fields(path, row)}`` per row whose image exists, split by ``patient_id``, and the
    excluded rows; ``item_fields`` returns a string instead of fields to exclude the row for that reason.
    """
    from tqdm import tqdm

    from pneumonitor.datasets.splits import assign_splits  # splits imports SPLITS from here

    rows, excluded = manifest_rows(root, folder_name, image_column)
    items = []
    for image, row in tqdm(rows, desc=folder_name, unit="img", disable=not progress):
        fields = item_fields(image, row)
        if isinstance(fields, str):
            excluded.append({"image": str(image), "reason": fields})
        else:
            items.append({"image": str(image), **fields})
    assign_splits(items, fractions=fractions, seed=seed)
    return items, excluded


def group_by_split(items: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group items by their ``"split"`` key into a datalist (the key is removed from each item).

    Items whose split is not one of ``SPLITS`` are dropped; every split key is present in the result (maybe empty).
    """
    datalist: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for item in items:
        split = item.get("split")
        if split in datalist:
            datalist[split].append({k: v for k, v in item.items() if k != "split"})
    return datalist


def load_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read a datalist JSON written by this package (or any MONAI decathlon-style datalist)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read datalist {path}: {error}") from error
    if not isinstance(payload, dict) or not any(isinstance(payload.get(s), list) for s in (*SPLITS, "all")):
        raise ValueError(f"{path} is not a datalist: expected lists under {', '.join(SPLITS)}")
    return payload


def summarize(datalist: Mapping[str, Any], label_key: str = "label") -> dict[str, Any]:
    """Counts per split: images, patients, images per label value and per source.

    Label values that are paths (LSNet datalists) are not counted per value.
    """
    summary: dict[str, Any] = {}
    for split in SPLITS:
        items = datalist.get(split) or []
        labels = Counter(
            str(item[label_key]) for item in items if isinstance(item.get(label_key), (int, np.integer))
        )
        summary[split] = {
            "images": len(items),
            "patients": len({(item.get("source"), item.get("patient_id")) for item in items}),
            "labels": dict(sorted(labels.items())),
            "sources": dict(sorted(Counter(str(item.get("source", "")) for item in items).items())),
        }
    return summary


def format_summary_table(summary: Mapping[str, Any], title: str = "") -> str:
    """A plain-text table of ``summarize`` output: one row per split and source."""
    header = f"{'split':<11} {'source':<28} {'images':>7} {'patients':>8} {'label 0':>8} {'label 1':>8}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for split in SPLITS:
        block = summary.get(split)
        if not block:
            continue
        labels = block.get("labels", {})
        lines.append(
            f"{split:<11} {'(all)':<28} {block['images']:>7} {block['patients']:>8} "
            f"{labels.get('0', '-'):>8} {labels.get('1', '-'):>8}"
        )
        for source, count in block.get("sources", {}).items():
            lines.append(f"{'':<11} {source:<28} {count:>7}")
    return "\n".join(lines)


def write_conversion(
    out_dir: str | os.PathLike,
    items: Sequence[Mapping[str, Any]],
    lsnet_items: Sequence[Mapping[str, Any]] = (),
    excluded: Sequence[Mapping[str, str]] = (),
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``datalist.json`` (+ ``lsnet_datalist.json`` when there are lung-mask items), ``excluded.json`` and
    ``summary.json`` into ``out_dir``; return the summary.

    ``items``/``lsnet_items`` carry a ``"split"`` key; ``excluded`` lists ``{"image": ..., "reason": ...}`` rows.
    """
    out_dir = Path(out_dir)
    info = dict(info or {})
    datalist = {**info, **group_by_split(items)}
    summary: dict[str, Any] = {**info, "datalist": summarize(datalist), "excluded": len(excluded)}
    reasons = Counter(row["reason"] for row in excluded)
    summary["excluded_reasons"] = dict(reasons.most_common())
    write_json(out_dir / "datalist.json", datalist, indent=1)
    if lsnet_items:
        lsnet = {**info, **group_by_split(lsnet_items)}
        summary["lsnet_datalist"] = summarize(lsnet)
        write_json(out_dir / "lsnet_datalist.json", lsnet, indent=1)
    write_json(out_dir / "excluded.json", list(excluded), indent=1)
    write_json(out_dir / "summary.json", summary, indent=1)
    return summary


def print_summary(summary: Mapping[str, Any], name: str) -> str:
    """Format (and return) the tables of ``write_conversion``'s summary for the terminal."""
    text = format_summary_table(summary["datalist"], title=f"{name}: datalist.json")
    if "lsnet_datalist" in summary:
        text += "\n\n" + format_summary_table(summary["lsnet_datalist"], title=f"{name}: lsnet_datalist.json")
    if summary.get("excluded"):
        text += f"\n\nexcluded {summary['excluded']} images:"
        for reason, count in summary.get("excluded_reasons", {}).items():
            text += f"\n  {count:>6}  {reason}"
    return text
