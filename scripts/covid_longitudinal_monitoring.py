#!/usr/bin/env python
"""Patient monitoring on the longitudinal series of the COVID-19 Image Data Collection, with trend agreement.

Uses ``../shared/data/covid-chestxray-dataset/longitudinal_series.csv`` (patients with CXRs at >= 2 day offsets;
lateral views are left out) and compares the profile of a method with the expert scores of the collection:
``severity_geographic_mean`` (official, 0-8), ``covidnet_geographic`` (COVIDx-S, 0-8, a superset) and
``brixia_S_global`` (Brixia, 0-18; trend agreement only asks "did it increase?", so the scale does not matter).

Where the profile comes from (``--source``):

* ``model``: the ``results.csv`` of ``pneumonitor analyze`` on these images (``--results``), or run analyze here
  with ``--dlnet``/``--lsnet`` checkpoints;
* ``annotations``: the radiologists' pixel masks of the GeneralBlockchain set (right/left lung, ground-glass
  opacity and consolidation) turned into the same results table: pneumonia = (GGO or consolidation) within the lungs,
  Pneumonia Ratio and 0-8 score exactly as the pipeline computes them. This measures how well the paper's
  ratio-based score follows the experts' visual score over time when the masks are perfect.

``--exclude-training DATALIST`` drops the patients of that datalist's training split (the training mix of the
weights being measured: ``runs/default-models/datalists/datalist.json``), so that a model's trend agreement is
measured only on patients it never saw.

Writes ``OUT/<source>/results`` (annotations only), ``OUT/<source>/monitoring`` (the ``pneumonitor monitor`` report)
and ``OUT/<source>/summary.json``, and prints a Markdown table of the trend agreements.

Example::

    python scripts/covid_longitudinal_monitoring.py --source annotations --out runs/covid-longitudinal
    python scripts/covid_longitudinal_monitoring.py --source model --results runs/analyze/results.csv \
        --out runs/covid-longitudinal
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from pneumonitor.monitoring import MetadataColumns
from pneumonitor.monitoring.compare import (against_constant_profiles, compare_profiles, describe_against_constant,
                                           join_profiles)
from pneumonitor.monitoring.runner import run_monitoring
from pneumonitor.publishing import atomic_folder, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
REFERENCES = ("severity_geographic_mean", "covidnet_geographic", "brixia_S_global")
PNEUMONIA_CLASSES = ("ground_glass_opacities", "consolidation")


def frontal_series(data: Path) -> pd.DataFrame:
    """Rows of ``longitudinal_series.csv`` for frontal views (PA, AP, AP Supine), with absolute image paths."""
    folder = data / "covid-chestxray-dataset"
    series = pd.read_csv(folder / "longitudinal_series.csv")
    series = series[series["view"].astype(str).str.upper().str.startswith(("PA", "AP"))].copy()
    series["path"] = [str((folder / f).resolve()) for f in series["stored_file"]]
    return series


def training_patients(datalist: Path, source: str = "covid-collection") -> set[str]:
    """Patient ids (without the ``<source>:`` prefix) of the training split of a mix datalist."""
    items = json.loads(datalist.read_text()).get("training", [])
    prefix = f"{source}:"
    return {str(i["patient_id"])[len(prefix):] for i in items if str(i.get("patient_id", "")).startswith(prefix)}


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        return np.zeros(shape, dtype=bool)
    mask = np.asarray(Image.open(path).convert("L")) > 127
    if mask.shape != shape:
        raise ValueError(f"{path} has shape {mask.shape}, expected {shape}")
    return mask


def annotation_results(data: Path, series: pd.DataFrame, out_dir: Path) -> Path:
    """Write a ``results.csv`` (same columns as ``analyze``) from the GeneralBlockchain radiologist masks.

    ``pneumonia_probability`` is 1 when the annotation has any GGO/consolidation inside the lungs and 0 otherwise
    (there is no classifier here); ``heatmap`` is left empty.
    """
    from pneumonitor.reading import read_radiograph
    from pneumonitor.publishing import write_png
    from pneumonitor.results import empty_row, write_results
    from pneumonitor.severity import lung_label_image, lung_score, pneumonia_ratio
    from pneumonitor.inference.overlays import render_overlay

    folder = data / "covid-chestxray-dataset"
    manifest = pd.read_csv(folder / "manifest.csv", usecols=["stored_file", "gb_masks"])
    rows = []
    annotated = series.merge(manifest, on="stored_file", how="inner").dropna(subset=["gb_masks"])
    for record in tqdm(annotated.to_dict("records"), desc="annotation masks", unit="image"):
        masks = folder / record["gb_masks"]
        row = empty_row()
        row.update(image=record["path"], status="ok")
        # Three images were annotated on a larger copy that is stored with the masks; use it so that they align.
        own_copy = masks / "image_gb_version.png"
        radiograph = read_radiograph(own_copy if own_copy.is_file() else record["path"])
        shape = radiograph.pixels.shape
        right, left = _read_mask(masks / "right_lung.png", shape), _read_mask(masks / "left_lung.png", shape)
        if not right.any() or not left.any():
            row.update(status="skipped", reason="annotation lacks the right or the left lung mask")
            rows.append(row)
            continue
        lungs = right | left
        pneumonia = np.zeros(shape, dtype=bool)
        for name in PNEUMONIA_CLASSES:
            pneumonia |= _read_mask(masks / f"{name}.png", shape)
        pneumonia &= lungs
        ratio_right, ratio_left = pneumonia_ratio(pneumonia, right), pneumonia_ratio(pneumonia, left)
        score_right, score_left = lung_score(ratio_right), lung_score(ratio_left)
        stem = Path(record["stored_file"]).stem
        outputs = {
            "lung_mask": f"masks/{stem}_lungs.png",
            "pneumonia_mask": f"masks/{stem}_pneumonia.png",
            "overlay": f"overlays/{stem}_overlay.png",
        }
        write_png(out_dir / outputs["lung_mask"], lung_label_image(right, left))
        write_png(out_dir / outputs["pneumonia_mask"], pneumonia)
        caption = f"radiologist masks: score {score_right + score_left}/8 (R {score_right}, L {score_left})"
        write_png(out_dir / outputs["overlay"], render_overlay(radiograph.pixels, right, left, pneumonia, caption))
        row.update(
            pneumonia_probability=float(pneumonia.any()),
            positive=int(pneumonia.any()),
            ratio_total=round(pneumonia_ratio(pneumonia, lungs), 2),
            ratio_right=round(ratio_right, 2),
            ratio_left=round(ratio_left, 2),
            score_right=score_right,
            score_left=score_left,
            score_total=score_right + score_left,
            rows=shape[0],
            columns=shape[1],
            **outputs,
        )
        rows.append(row)
    settings = {"source": "GeneralBlockchain radiologist masks", "pneumonia": "GGO or consolidation within lungs",
                "classification_threshold": 0.5}
    csv_path, _ = write_results(rows, out_dir, settings)
    return csv_path


def run_analyze(series: pd.DataFrame, out_dir: Path, dlnet: str | None, lsnet: str | None) -> Path:
    """Run ``pneumonitor analyze`` on the frontal images of the series; returns its results.csv."""
    command = [sys.executable, "-m", "pneumonitor", "analyze", *series["path"], "--out", str(out_dir)]
    command += (["--dlnet", dlnet] if dlnet else []) + (["--lsnet", lsnet] if lsnet else [])
    subprocess.run(command, check=True)
    return out_dir / "results.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("model", "annotations"), required=True)
    parser.add_argument("--out", required=True, type=Path, help="output folder (a sub-folder per source)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--results", type=Path, help="model: results.csv of 'pneumonitor analyze' on these images")
    parser.add_argument("--dlnet", help="model: DLNet checkpoint, to run analyze here")
    parser.add_argument("--lsnet", help="model: LSNet checkpoint, to run analyze here")
    parser.add_argument("--exclude-training", type=Path, metavar="DATALIST",
                        help="leave out the patients of this datalist's training split (measure unseen patients only)")
    args = parser.parse_args(argv)

    series_csv = args.data / "covid-chestxray-dataset" / "longitudinal_series.csv"
    if not series_csv.is_file():
        print(f"error: {series_csv} not found (give --data)", file=sys.stderr)
        return 2
    series = frontal_series(args.data)
    excluded_patients = 0
    if args.exclude_training is not None:
        if not args.exclude_training.is_file():
            print(f"error: {args.exclude_training} not found", file=sys.stderr)
            return 2
        seen = training_patients(args.exclude_training)
        keep = ~series["patientid"].astype(str).isin(seen)
        excluded_patients = int(series.loc[~keep, "patientid"].nunique())
        series = series[keep].copy()
        print(f"left out {excluded_patients} training patients of {args.exclude_training}; "
              f"{series['patientid'].nunique()} patients remain")
    out = args.out / args.source
    out.mkdir(parents=True, exist_ok=True)
    if args.source == "annotations":
        # Built under a temporary name and renamed, so that an interrupted run leaves no half-written results.
        with atomic_folder(out / "results") as building:
            annotation_results(args.data, series, building)
        results = out / "results" / "results.csv"
    elif args.results is not None:
        results = args.results
    else:
        results = run_analyze(series, out / "analyze", args.dlnet, args.lsnet)
    columns = MetadataColumns(image="stored_file", patient="patientid", time="offset_days", extra=REFERENCES)
    summary = run_monitoring(results, out / "monitoring", metadata=series_csv, columns=columns, overwrite=True)
    if summary.n_dated_studies == 0:
        print(f"warning: analyze gave no usable study ({results}); untrained weights find no lungs", file=sys.stderr)
    timelines = pd.read_csv(out / "monitoring" / "timelines.csv", dtype=str)
    numbers: dict[str, object] = {"source": args.source, "results": str(results), "patients": len(summary.profiles),
                                  "excluded_training_patients": excluded_patients,
                                  "dated_studies": summary.n_dated_studies, "agreement": {}}
    lines = ["| profile | reference | patients (>= 2 scored) | transitions | trend agreement "
             "| against the constant profiles (same transitions) |",
             "|---|---|---|---|---|---|"]
    for column in ("score_total", "ratio_total"):
        for reference in REFERENCES:
            joined = join_profiles(timelines, None, column, reference, "patient_id", "day")
            _, pooled = compare_profiles(joined)
            baselines = against_constant_profiles(joined)
            numbers["agreement"][f"{column} vs {reference}"] = {
                "accuracy": pooled.accuracy, "n_agree": pooled.n_agree, "n_transitions": pooled.n_transitions,
                "n_patients": pooled.n_patients, "mean_per_patient": pooled.mean_per_patient, **baselines}
            accuracy = (f"{pooled.accuracy:.3f} ({pooled.n_agree}/{pooled.n_transitions})"
                        if pooled.n_transitions else "n/a")
            lines.append(f"| {column} | {reference} | {pooled.n_patients} | {pooled.n_transitions} | {accuracy} "
                         f"| {describe_against_constant(baselines, column)} |")
    # Agreement between two expert scoring systems on the same images: what "good" looks like for any method.
    experts = series.rename(columns={"patientid": "patient_id", "offset_days": "day"})
    joined = join_profiles(experts, None, "covidnet_geographic", "brixia_S_global", "patient_id", "day")
    _, pooled = compare_profiles(joined)
    numbers["expert_vs_expert"] = {"a": "covidnet_geographic", "b": "brixia_S_global", "accuracy": pooled.accuracy,
                                   "n_agree": pooled.n_agree, "n_transitions": pooled.n_transitions,
                                   "n_patients": pooled.n_patients}
    lines.append(f"\nExperts vs experts (covidnet_geographic vs brixia_S_global, all frontal images): "
                 f"{pooled.accuracy:.3f} ({pooled.n_agree}/{pooled.n_transitions} transitions, "
                 f"{pooled.n_patients} patients)")
    write_json(out / "summary.json", numbers)
    print("\n".join(lines))
    print(f"report: {out / 'monitoring' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
