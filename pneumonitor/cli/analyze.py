"""``pneumonitor analyze INPUT... --out DIR``: detection, lung masks and per-lung severity for each radiograph.

Analyze frontal chest radiographs. Writes DIR/results.csv, DIR/results.json, masks/ and overlays/.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from pneumonitor.cli import add_command

logger = logging.getLogger("pneumonitor.analyze")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pneumonitor.severity import CLASSIFICATION_THRESHOLD, HEATMAP_THRESHOLD, PROBABILITY_SOURCES, SEVERITY_RULES

    parser = add_command(
        subparsers, "analyze", run, description=__doc__,
        help="analyze chest radiographs (DICOM CR/DX, PNG, JPEG, NIfTI): probability, lung masks, severity 0-8",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--dlnet", type=Path, help="DLNet bundle folder (default: bundles/dlnet)")
    parser.add_argument("--lsnet", type=Path, help="LSNet bundle folder (default: bundles/lsnet)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--classification-threshold", type=float, default=None,
                        help="probability below which an image is negative (default: the DLNet weights' validated "
                        "operating point from their bundle's inference.json, else the paper's "
                        f"{CLASSIFICATION_THRESHOLD})")
    parser.add_argument("--operating-point", default=None, metavar="NAME",
                        help="a named classification operating point of the DLNet bundle instead of its default "
                        "(the shipped bundle: 'balanced', the default, or 'high-specificity': at most 10 %% of each "
                        "validation source's normals called positive; see its model card)")
    parser.add_argument("--heatmap-threshold", type=float, default=None,
                        help="heatmap value at or above which a lung pixel is pneumonia (default: the DLNet weights' "
                        f"validated threshold, else the paper's {HEATMAP_THRESHOLD})")
    parser.add_argument("--severity-rule", choices=list(SEVERITY_RULES), default=None,
                        help="which pixels are pneumonia: 'heatmap-threshold' (the paper: heatmap >= threshold) or "
                        "'extent-head' (DLNet's fitted extent head sets each lung's share, placed where the heatmap is "
                        "highest; docs/analyze.md) (default: the DLNet bundle's severity_rule, else the paper's)")
    parser.add_argument("--probability-source", choices=list(PROBABILITY_SOURCES), default=None,
                        help="the pneumonia probability: DLNet's 'classification-head' (the paper) or the extent head's "
                        "'lung-classifier' (reads the lungs only; docs/analyze.md) (default: the DLNet bundle's "
                        "probability_source, else the paper's)")
    parser.add_argument("--lung-threshold", type=float, default=0.5, help="LSNet probability threshold (default 0.5)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads decoding/preprocessing ahead of inference (default: min(4, CPUs); 0 = none)")
    parser.add_argument("--mixed-precision", choices=["bf16", "fp16", "none"], default="bf16",
                        help="CUDA autocast dtype (CPU: always fp32)")
    parser.add_argument("--qc", choices=["on", "warn", "off"], default="on",
                        help="image QC gate (bundles/qc): 'on' skips laterals, inverted or rotated images and "
                        "non-radiographs with the finding as reason; 'warn' analyses them and names the finding in "
                        "the qc column; 'off' (default: on)")
    parser.add_argument("--qc-bundle", type=Path, help="QC bundle folder (default: bundles/qc)")
    parser.add_argument("--uncertainty", choices=["off", "flip", "flip+mc"], default="flip",
                        help="spread of every number: 'flip' = a mirrored pass, 'flip+mc' = also MC-dropout passes of "
                        "DLNet (--mc-samples); 'off' = none (default: flip)")
    parser.add_argument("--mc-samples", type=int, default=8,
                        help="MC-dropout passes with --uncertainty flip+mc (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pneumonitor.reading import find_inputs
    from pneumonitor.networks import WeightsNotFound
    from pneumonitor.inference.analyzer import (
        IMAGE_OUTPUT_FOLDERS,
        AnalysisSettings,
        Analyzer,
        analyze_to_folder,
        remove_stale_temporaries,
    )
    from pneumonitor.results import write_results

    if args.batch_size < 1:
        logger.error("--batch-size must be at least 1")
        return 2
    for name in ("classification_threshold", "heatmap_threshold", "lung_threshold"):
        if getattr(args, name) is not None and not 0.0 <= getattr(args, name) <= 1.0:
            logger.error("--%s must be in [0, 1]", name.replace("_", "-"))
            return 2
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        logger.error("--out %s exists and is not a folder", out_dir)
        return 2
    paths = find_inputs(args.inputs)
    if all(path.is_dir() for path in paths):  # only folders without radiographs
        logger.error("no input images found in %s", ", ".join(args.inputs))
        return 2
    settings = AnalysisSettings(
        classification_threshold=args.classification_threshold,
        operating_point=args.operating_point,
        heatmap_threshold=args.heatmap_threshold,
        severity_rule=args.severity_rule,
        probability_source=args.probability_source,
        lung_threshold=args.lung_threshold,
        mixed_precision=args.mixed_precision,
        qc=args.qc,
        uncertainty=args.uncertainty,
        mc_samples=args.mc_samples,
    )
    try:
        analyzer = Analyzer.from_locations(
            args.dlnet, args.lsnet, device=args.device, settings=settings, qc_bundle=args.qc_bundle
        )
    except (WeightsNotFound, ValueError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error("--out %s cannot be created: %s", out_dir, exc)
        return 2
    # pydicom's decoders log a traceback for each frame they cannot decode; the skip reason names the error
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    for path in remove_stale_temporaries(out_dir):
        logger.info("removed %s, a partial file of an interrupted run", path)
    earlier = _image_outputs(out_dir)
    # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: running writes finish, nothing partial is left, no traceback
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        rows = analyze_to_folder(
            analyzer, paths, out_dir, batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress
        )
        csv_path, _ = write_results(rows, out_dir, analyzer.describe())
    except KeyboardInterrupt:
        logger.error("interrupted: results.csv/json not written; the PNGs written so far are complete files")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    stale = earlier - {out_dir / r[key] for r in rows for key in ("lung_mask", "pneumonia_mask", "heatmap", "overlay")
                       if r.get(key)}
    if stale:
        logger.warning("%d file(s) in %s/{%s} are from an earlier run and not in results.csv (e.g. %s)", len(stale),
                       out_dir, ",".join(IMAGE_OUTPUT_FOLDERS), sorted(stale)[0].name)
    ok = [r for r in rows if r["status"] == "ok"]
    positives = sum(int(r["positive"]) for r in ok)
    print(
        f"analyzed {len(rows)} image(s): {len(ok)} ok ({positives} positive), {len(rows) - len(ok)} skipped "
        f"-> {csv_path}"
    )
    if not ok:
        logger.error("no image could be analysed (see the reasons in %s)", csv_path)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _image_outputs(out_dir: Path) -> set[Path]:
    """The PNGs under OUT's image-output folders (to tell this run's from an earlier run's)."""
    from pneumonitor.inference.analyzer import IMAGE_OUTPUT_FOLDERS

    return {p for name in IMAGE_OUTPUT_FOLDERS if (out_dir / name).is_dir() for p in (out_dir / name).glob("*.png")}
