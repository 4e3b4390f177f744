"""Pairing ``pneumonitor analyze`` results with reference labels.

Results: ``DIR/results.csv`` (columns as written by ``pneumonitor analyze``; mask/heatmap paths relative to DIR).
Reference: a datalist JSON written by ``pneumonitor datasets`` (items of one split, or ``all`` splits), or a CSV with
an ``image`` column and any of ``label``, ``boxes`` (JSON list), ``mask``, ``lung_mask``, ``lung_mask_ignore_value``,
``severity``, ``severity_right``, ``severity_left``, ``involvement_right``, ``involvement_left``.

A reference item matches the result row with the same absolute image path; failing that, the row with the same file
name (basename), when that name is unique among the results. Result rows with ``status != ok`` are left out and
counted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pneumonitor.datasets.datalist import SPLITS, load_datalist
from pneumonitor.results import read_results

@dataclass
class MatchedSet:
    """Reference items paired with result rows (dicts; numeric fields as floats, NaN when empty)."""

    results_dir: Path
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    skipped_by_analyze: list[dict[str, str]] = field(default_factory=list)

    def result_path(self, row: dict[str, Any], column: str) -> Path | None:
        """Absolute path of a result file column (relative to the results folder), None when empty."""
        value = row.get(column)
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        return path if path.is_absolute() else self.results_dir / path


def load_results(path: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """Read ``results.csv`` (given as the file or its folder; :func:`pneumonitor.results.read_results`); returns
    (table, folder): numbers as float (NaN when empty), text as str."""
    results = read_results(path)
    return results.frame(), results.folder.resolve()


def _parse_cell(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    if key == "boxes":
        return json.loads(value)
    if key in ("label", "lung_mask_ignore_value", "severity_right", "severity_left"):
        return int(float(value))
    if key in ("severity", "involvement_right", "involvement_left", "involvement_total"):
        return float(value)
    return value


def load_reference(path: str | os.PathLike, split: str = "test") -> list[dict[str, Any]]:
    """Reference items from a datalist JSON (``split`` in training/validation/test/all) or a CSV."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError) as error:
            raise ValueError(f"cannot read reference {path}: {error}") from error
        if "image" not in table.columns:
            raise ValueError(f"{path} has no 'image' column")
        items = []
        for record in table.to_dict("records"):
            items.append({k: _parse_cell(k, v) for k, v in record.items() if _parse_cell(k, v) is not None})
        return items
    datalist = load_datalist(path)
    if split == "all":
        return [item for name in (*SPLITS, "all") for item in datalist.get(name) or []]
    if split not in datalist or not isinstance(datalist[split], list):
        raise ValueError(f"{path} has no {split!r} split")
    return list(datalist[split])


def match(results: pd.DataFrame, results_dir: Path, reference: list[dict[str, Any]]) -> MatchedSet:
    """Pair reference items with result rows (absolute path first, then unique basename)."""
    matched = MatchedSet(results_dir=results_dir)
    by_path: dict[str, dict[str, Any]] = {}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in results.to_dict("records"):
        by_path[os.path.normpath(row["image"])] = row
        by_name.setdefault(os.path.basename(row["image"]), []).append(row)
    for item in reference:
        image = str(item.get("image", ""))
        row = by_path.get(os.path.normpath(image))
        if row is None:
            candidates = by_name.get(os.path.basename(image), [])
            row = candidates[0] if len(candidates) == 1 else None
        if row is None:
            matched.unmatched_reference.append(image)
        elif row.get("status", "ok") != "ok":
            matched.skipped_by_analyze.append({"image": image, "reason": row.get("reason", "")})
        else:
            matched.pairs.append((item, row))
    return matched


__all__ = ["MatchedSet", "load_reference", "load_results", "match"]
