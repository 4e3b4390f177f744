"""Stage-2 measurement table (issue 6): how close to the radiologist's pneumonia mask is each localization?

On positives of a held-out split (default ``test``) that carry boxes and a radiologist mask (``mask`` or, in a
datalist written by ``pneumonitor proposals``, ``reference_mask``), Dice and IoU against that mask of

(a) the box mask (the union of the item's boxes),
(b) the stage-1 (DLNet-1) heatmap thresholded (``>= --heatmap-threshold``, paper: 0.8),
(c) the stage-2 proposal (Grad-CAM of DLNet-1 inside the boxes, :mod:`pneumonitor.stage2.gradcam`),
(d) the DLNet-2 heatmap thresholded (only with ``--dlnet2``).

Heatmaps are DLNet's per-pixel max over its maps, resized (bilinear) from the network input to the stored image
(:meth:`pneumonitor.inference.analyzer.Analyzer.pneumonia`).

Outputs (``--out``): ``measurements.csv`` (one row per image and method), ``table.md`` and ``table.json``
(mean ± sd per method, n images) and ``examples.png`` (a few images with the reference and the four contours).

    python -m pneumonitor.stage2.measure --datalist DATALIST.json --dlnet1 bundles/dlnet --dlnet2 runs/dlnet2 \
        --out reports/stage2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

METHODS = {
    "box": "(a) box mask",
    "stage1_heatmap": "(b) DLNet-1 heatmap >= t",
    "proposal": "(c) stage-2 proposal (Grad-CAM in box)",
    "stage2_heatmap": "(d) DLNet-2 heatmap >= t",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", required=True, help="datalist JSON whose items have boxes and a reference mask")
    parser.add_argument("--dlnet1", required=True, help="stage-1 DLNet bundle folder")
    parser.add_argument("--dlnet2", help="stage-2 DLNet bundle folder (row (d) is left out without it)")
    parser.add_argument("--split", default="test", help="datalist split to measure on (default: test)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--heatmap-threshold", type=float, default=0.8, help="heatmap threshold (default 0.8)")
    parser.add_argument("--gradcam-threshold", type=float, default=0.4, help="Grad-CAM threshold (default 0.4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=4, help="images drawn in examples.png (default 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def reference_items(datalist: dict, split: str) -> list[dict]:
    """Positives of ``split`` with boxes and a reference mask path (``reference_mask`` wins over ``mask``)."""
    items = []
    for item in datalist.get(split) or []:
        reference = item.get("reference_mask") or item.get("mask") or ""
        if int(item.get("label", 0) or 0) == 1 and item.get("boxes") and reference and Path(reference).is_file():
            items.append({**item, "reference": reference})
    return items


def draw_examples(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pneumonitor.publishing import save_figure

    colors = {"reference": "white", "box": "yellow", "stage1_heatmap": "orange", "proposal": "lime",
              "stage2_heatmap": "cyan"}
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4.4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        ax.imshow(row["pixels"], cmap="gray", vmin=0, vmax=1)
        for name, mask in row["masks"].items():
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colors[name], linewidths=1.2)
        ax.set_title(Path(row["image"]).name[:32], fontsize=8)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=("radiologist" if n == "reference" else METHODS[n]))
               for n, c in colors.items() if any(n in r["masks"] for r in rows)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from pneumonitor.datasets.bounding_boxes import boxes_to_mask
    from pneumonitor.datasets.datalist import load_datalist
    from pneumonitor.publishing import write_csv, write_json, write_text
    from pneumonitor.datasets.images import read_gray
    from pneumonitor.evaluation.segmentation import mean_sd, overlap
    from pneumonitor.stage2.gradcam import GradCAMProposer, GradCAMSettings
    from pneumonitor.reading import UnsupportedInput, read_radiograph
    from pneumonitor.inference.analyzer import Analyzer
    from pneumonitor.networks import WeightsNotFound, load_bundle
    from pneumonitor.networks.bundle import single_dlnet

    try:
        datalist = load_datalist(args.datalist)
        # Grad-CAM hooks one network's layers: an ensemble's localization member
        dlnet1 = single_dlnet(load_bundle(args.dlnet1, args.device, kind="DLNet"))
        dlnet2 = single_dlnet(load_bundle(args.dlnet2, args.device, kind="DLNet")) if args.dlnet2 else None
    except (ValueError, WeightsNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    items = reference_items(datalist, args.split)
    if not items:
        print(f"error: no positive with boxes and a reference mask in split {args.split!r} of {args.datalist}",
              file=sys.stderr)
        return 2
    proposer = GradCAMProposer(dlnet1.network, dlnet1.image_size, GradCAMSettings(threshold=args.gradcam_threshold),
                               device=args.device)
    stage1 = Analyzer(dlnet1, None, device=args.device)
    stage2 = Analyzer(dlnet2, None, device=args.device) if dlnet2 else None
    methods = [m for m in METHODS if dlnet2 is not None or m != "stage2_heatmap"]
    rows: list[dict] = []
    examples: list[dict] = []
    skipped: list[dict] = []
    for item in tqdm(items, desc="stage-2 measurement", unit="img", disable=args.quiet):
        try:
            radiograph = read_radiograph(item["image"])
            pixels = radiograph.pixels
        except (OSError, UnsupportedInput, ValueError) as error:
            skipped.append({"image": item["image"], "reason": str(error)})
            continue
        reference = read_gray(item["reference"]) > 127
        if reference.shape != pixels.shape:
            skipped.append({"image": item["image"], "reason": f"mask {reference.shape} != image {pixels.shape}"})
            continue
        masks = {"box": boxes_to_mask(item["boxes"], pixels.shape)}
        masks["stage1_heatmap"] = stage1.pneumonia(radiograph)[1] >= args.heatmap_threshold
        masks["proposal"] = proposer(pixels, item["boxes"]).binary
        if stage2 is not None:
            masks["stage2_heatmap"] = stage2.pneumonia(radiograph)[1] >= args.heatmap_threshold
        for method in methods:
            dice, iou = overlap(masks[method], reference)
            rows.append({"image": item["image"], "method": method, "dice": round(dice, 4), "iou": round(iou, 4),
                         "area_fraction_of_reference": round(float(masks[method].sum()) / max(1, reference.sum()), 4)})
        if len(examples) < args.examples:
            examples.append({"image": item["image"], "pixels": pixels, "masks": {"reference": reference, **masks}})
    if not rows:
        print("error: no image could be measured: " + "; ".join(s["reason"] for s in skipped[:3]), file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for method in methods:
        dice = mean_sd([r["dice"] for r in rows if r["method"] == method])
        iou = mean_sd([r["iou"] for r in rows if r["method"] == method])
        table[method] = {"label": METHODS[method], "dice_mean": dice.mean, "dice_sd": dice.sd, "iou_mean": iou.mean,
                         "iou_sd": iou.sd, "n": dice.n}
    lines = [
        f"Dice and IoU against the radiologist pneumonia masks, split `{args.split}` of `{args.datalist}`, "
        f"{table['box']['n']} images; heatmap threshold {args.heatmap_threshold:g}, Grad-CAM threshold "
        f"{args.gradcam_threshold:g}.",
        "",
        "| localization | Dice (mean ± sd) | IoU (mean ± sd) |",
        "|---|---|---|",
    ]
    for method, stats in table.items():
        lines.append(f"| {stats['label']} | {stats['dice_mean']:.3f} ± {stats['dice_sd']:.3f} | "
                     f"{stats['iou_mean']:.3f} ± {stats['iou_sd']:.3f} |")
    box_dice = table["box"]["dice_mean"]
    better = [m for m in ("proposal", "stage2_heatmap") if m in table and table[m]["dice_mean"] > box_dice]
    verdict = ", ".join(METHODS[m] for m in better) if better else "neither (c) nor (d)"
    lines += ["", f"Beats the box mask on mean Dice: {verdict}."]
    if skipped:
        lines.append(f"Skipped {len(skipped)} image(s): " + "; ".join(f"{s['image']}: {s['reason']}" for s in skipped))
    settings = {"datalist": str(Path(args.datalist).resolve()), "split": args.split,
                "dlnet1": {"source": str(dlnet1.source), "sha256": dlnet1.sha256},
                "dlnet2": {"source": str(dlnet2.source), "sha256": dlnet2.sha256} if dlnet2 else None,
                "heatmap_threshold": args.heatmap_threshold, "gradcam": proposer.settings.to_dict()}
    write_csv(out / "measurements.csv", rows, list(rows[0]))
    write_json(out / "table.json", {"settings": settings, "table": table, "skipped": skipped}, indent=1)
    write_text(out / "table.md", "\n".join(lines) + "\n")
    if examples:
        draw_examples(examples, out / "examples.png")
    print("\n".join(lines))
    print(f"wrote {out / 'measurements.csv'}, {out / 'table.md'}, {out / 'table.json'}, {out / 'examples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
