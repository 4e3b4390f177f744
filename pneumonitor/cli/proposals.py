"""``pneumonitor proposals``: the stage-2 datalist (Grad-CAM proposal masks for half of the confident positives).

With a stage-1 DLNet, score every positive with boxes of the processed splits, draw half of those with a score above
0.8 (seeded), compute their Grad-CAM proposal masks inside the boxes and write DIR/masks/*.png, DIR/datalist.json
(the stage-2 datalist: drawn items carry the proposal as 'mask', the rest unchanged), DIR/summary.json (settings,
counts, one row per item) and DIR/preview.png (up to 8 replaced images with their boxes, proposal and reference
mask). With --boxes-only, no network is needed: DIR/datalist.json is the input with the box-label rule only (stage 1
of the paper).
"""

from __future__ import annotations

import argparse
import sys

from pneumonitor.cli import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "proposals", run, description=__doc__,
                         help="stage 2: Grad-CAM proposal masks replace the boxes of half of the confident positives")
    parser.add_argument("--datalist", required=True, help="input datalist JSON (items: image, label, boxes[, mask])")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--dlnet", help="stage-1 DLNet bundle folder (required unless --boxes-only)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.add_argument("--boxes-only", action="store_true",
                        help="no proposals: write the datalist where positives with boxes train on their boxes")
    parser.add_argument("--splits", default="training", help="comma-separated splits to process (default: training)")
    parser.add_argument("--score-threshold", type=float, default=0.8,
                        help="positives need a classification score above this (default 0.8)")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the eligible positives replaced (0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--keep-input-masks", action="store_true",
                        help="positives that already have a mask keep it and get no proposal (default: their boxes "
                        "are the label and the mask moves to 'reference_mask')")
    parser.add_argument("--threshold", type=float, default=0.4, help="Grad-CAM threshold (default 0.4)")
    parser.add_argument("--smooth-sigma", type=float, default=0.01,
                        help="smoothing sigma of the combined map, fraction of the shorter side (default 0.01)")
    parser.add_argument("--edge-sigma", type=float, default=0.01,
                        help="edge blur sigma, fraction of the shorter side (default 0.01)")
    parser.add_argument("--score", default="box_max_mean", choices=("box_max_mean", "box_sum", "sum"),
                        help="scalar read from the localization head's last conv for Grad-CAM (default box_max_mean)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pneumonitor.datasets.datalist import load_datalist
    from pneumonitor.publishing import write_json
    from pneumonitor.stage2.proposals import (
        SelectionSettings,
        boxes_only_datalist,
        build_stage2_datalist,
        format_outcome_table,
        outcome_counts,
        settings_dict,
        write_preview,
    )

    datalist_path = Path(args.datalist)
    try:
        datalist = load_datalist(datalist_path)
        settings = SelectionSettings(
            score_threshold=args.score_threshold, fraction=args.fraction, seed=args.seed,
            splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()), box_labels=not args.keep_input_masks,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    unknown = [s for s in settings.splits if not isinstance(datalist.get(s), list)]
    if unknown:
        print(f"error: the datalist has no split(s) {unknown}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    if args.boxes_only:
        new = boxes_only_datalist(datalist, settings)
        write_json(out_dir / "datalist.json", new, indent=1)
        print(f"wrote {out_dir / 'datalist.json'} (box labels in {', '.join(settings.splits)})")
        return 0
    if not args.dlnet:
        print("error: --dlnet is required (or use --boxes-only)", file=sys.stderr)
        return 2

    import torch

    from pneumonitor.stage2.gradcam import GradCAMProposer, GradCAMSettings
    from pneumonitor.reading import read_radiograph
    from pneumonitor.networks import WeightsNotFound, load_bundle
    from pneumonitor.networks.bundle import single_dlnet

    try:
        # Grad-CAM hooks one network's layers: an ensemble's localization member
        loaded = single_dlnet(load_bundle(args.dlnet, args.device, kind="DLNet"))
        cam_settings = GradCAMSettings(score=args.score, smooth_sigma=args.smooth_sigma,
                                       threshold=args.threshold, edge_sigma=args.edge_sigma)
    except (WeightsNotFound, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    clahe = {k: loaded.settings[k] for k in ("clahe_clip_limit", "clahe_tile_grid") if k in loaded.settings}
    torch.manual_seed(settings.seed)
    proposer = GradCAMProposer(loaded.network, loaded.image_size, cam_settings, device=args.device, **clahe)

    def score_fn(path: Path) -> float:
        return proposer.probability(read_radiograph(path).pixels)

    def propose_fn(path: Path, boxes: list[list[float]]):
        return proposer(read_radiograph(path).pixels, boxes)

    new, outcomes = build_stage2_datalist(
        datalist, score_fn, propose_fn, out_dir, settings, base_dir=datalist_path.parent, progress=not args.quiet
    )
    summary = {
        "dlnet": {"source": str(loaded.source), "sha256": loaded.sha256, "image_size": list(loaded.image_size)},
        "input_datalist": str(datalist_path.resolve()),
        "selection": settings_dict(settings),
        "gradcam": cam_settings.to_dict(),
        "counts": outcome_counts(outcomes),
        "items": [row.__dict__ for row in outcomes],
    }
    write_json(out_dir / "summary.json", summary, indent=1)
    write_json(out_dir / "datalist.json", new, indent=1)
    preview = write_preview(new, outcomes, out_dir / "preview.png", settings=settings,
                            base_dir=datalist_path.parent)
    if not args.quiet:
        print(format_outcome_table(outcomes, settings))
        extra = f", {preview}" if preview else ""
        print(f"wrote {out_dir / 'datalist.json'}, {out_dir / 'summary.json'}{extra} and {out_dir / 'masks'}/")
    return 0
