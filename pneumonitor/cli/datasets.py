"""``pneumonitor datasets <name> ...``: convert a public dataset into MONAI datalist JSON + a summary.

Every converter writes into ``--out``: ``datalist.json`` (``training``/``validation``/``test``), ``summary.json``
(counts per split, label and source; also printed as a table), ``excluded.json`` (each left-out image and why) and,
where lung masks exist, ``lsnet_datalist.json`` (``image``, ``label`` = lung mask path).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pneumonitor.cli import add_command

LOGGER = logging.getLogger(__name__)
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DEFAULT_LSNET = Path(__file__).resolve().parents[2] / "bundles" / "lsnet"
DEFAULT_DLNET = Path(__file__).resolve().parents[2] / "bundles" / "dlnet"
#: the mix's datasets (kept in step with ``pneumonitor.datasets.mix.DEFAULT_INCLUDE``; a test checks)
MIX_DEFAULT_INCLUDE = ("covid-collection", "pediatric", "jsrt", "nih", "rsna-normals", "hannover", "covidx-extra")


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from error
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"fractions must be 3 non-negative numbers summing to 1, got {text!r}")
    return values  # type: ignore[return-value]


def _sizes(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {text!r}") from error
    if len(values) != 3 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected three non-negative integers, got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "datasets", run, description=__doc__,
                         help="convert public chest X-ray datasets into MONAI datalists")
    names = parser.add_subparsers(dest="dataset", metavar="DATASET")

    def common(sub: argparse.ArgumentParser, fractions: str | None = "0.8,0.1,0.1") -> None:
        sub.add_argument("--out", required=True, type=Path, help="output folder")
        sub.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default 0)")
        if fractions is not None:
            sub.add_argument("--fractions", type=_fractions, default=_fractions(fractions),
                             help=f"training,validation,test fractions of patients (default {fractions})")
        sub.add_argument("--quiet", action="store_true", help="no progress bar or table")

    rsna = names.add_parser("rsna", help="RSNA Pneumonia Detection Challenge (Kaggle layout), adults, balanced split")
    rsna.add_argument("--labels", required=True, type=Path, help="stage_2_train_labels.csv")
    rsna.add_argument("--class-info", type=Path, help="stage_2_detailed_class_info.csv (optional)")
    rsna.add_argument("--dicom-dir", required=True, type=Path, help="folder of <patientId>.dcm (stage_2_train_images)")
    rsna.add_argument("--sizes", type=_sizes, default=(9004, 1126, 1124),
                      help="training,validation,test sizes, half positive each (default the paper's 9004,1126,1124)")
    rsna.add_argument("--min-age", type=float, default=18.0, help="adults: PatientAge >= this (years, default 18)")
    common(rsna, fractions=None)

    covid = names.add_parser("covid-collection", help="COVID-19 Image Data Collection with all its annotations")
    covid.add_argument("--root", type=Path, default=DEFAULT_DATA_ROOT / "covid-chestxray-dataset")
    covid.add_argument("--closing-radius", type=int, default=5, help="box merging radius in pixels (default 5)")
    common(covid)  # same default fractions and seed as `mix`, so its test split is the mix's

    pediatric = names.add_parser("pediatric", help="pediatric normal / pneumonia set")
    pediatric.add_argument("--root", type=Path, default=DEFAULT_DATA_ROOT / "pediatric-pneumonia")
    common(pediatric)

    jsrt = names.add_parser("jsrt", help="JSRT + SCR lung masks (negatives; lung segmentation)")
    jsrt.add_argument("--root", type=Path, default=DEFAULT_DATA_ROOT / "jsrt-scr")
    common(jsrt)

    covidx = names.add_parser("covidx-severity", help="COVIDx-S scored images (Actualmed, Figure 1)")
    covidx.add_argument("--root", type=Path, default=DEFAULT_DATA_ROOT / "covidx-severity-extra")
    common(covidx, "0,0,1")

    adult = {"nih": ("NIH ChestX-ray8 subset: adult no finding / pneumonia (+ boxes)", "nih-chestxray-subset"),
             "rsna-normals": ("RSNA-derived adult normals (224 px)", "rsna-normals-224"),
             "hannover": ("Hannover adult COVID-19 radiographs with clinical course", "hannover-covid")}
    for name, (text, folder) in adult.items():
        sub = names.add_parser(name, help=text)
        sub.add_argument("--root", type=Path, default=DEFAULT_DATA_ROOT / folder)
        common(sub, "0.7,0.15,0.15")  # the mix's fractions for these sets, so the splits agree

    mix = names.add_parser("mix", help="the training mix for DLNet and LSNet (all local datasets)")
    mix.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding the datasets")
    mix.add_argument("--closing-radius", type=int, default=5, help="box merging radius in pixels (default 5)")
    mix.add_argument("--include", default=",".join(MIX_DEFAULT_INCLUDE),
                     help=f"comma-separated datasets (default {','.join(MIX_DEFAULT_INCLUDE)})")
    mix.add_argument("--lsnet", type=Path, default=DEFAULT_LSNET,
                     help="LSNet bundle or checkpoint that predicts the lungs of DLNet items without a human lung mask "
                          f"(default {DEFAULT_LSNET}); 'none' leaves them without lungs")
    common(mix)
    pack = names.add_parser("pack", help="a DLNet bundle's loading stage run once over a datalist, stored compactly "
                                         "(pneumonitor.datasets.pack; train with configs/train_packed.json)")
    pack.add_argument("--datalist", type=Path, required=True, help="the mix's datalist.json")
    pack.add_argument("--out", type=Path, required=True, help="folder for pack.json + pack.npz")
    pack.add_argument("--config", type=Path, default=DEFAULT_DLNET / "configs" / "train.json",
                      help="the training config whose loading stage and image_size are packed (default: DLNet's "
                           "train.json, 448 px; a 448-px pack also serves 224-px training)")
    pack.add_argument("--splits", default="training,validation", help="comma-separated (default training,validation)")
    pack.add_argument("--quality", type=int, default=90,
                      help="WebP quality 1-100 of the 8-bit images; 0 = lossless (default 90)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(_parser=parser)


def _pack(args: argparse.Namespace) -> int:
    from pneumonitor.datasets.pack import write_training_pack

    if not 0 <= args.quality <= 100:
        LOGGER.error("--quality must be 0 (lossless) to 100, got %d", args.quality)
        return 2
    for path, what in ((args.datalist, "datalist"), (args.config, "config")):
        if not path.is_file():
            LOGGER.error("%s %s does not exist", what, path)
            return 2
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        summary = write_training_pack(args.datalist, args.out, args.config, splits=splits,
                                      quality=args.quality or None, progress=not args.quiet)
    except (ValueError, json.JSONDecodeError) as error:
        LOGGER.error("%s", error)
        return 2
    if not args.quiet:
        print(f"packed {summary['counts']} at {summary['image_size']} px into {args.out.resolve()} "
              f"({summary['megabytes']} MB; {len(summary['left_out'])} left out, see pack.json)")
    return 0


def run(args: argparse.Namespace) -> int:
    from pneumonitor.datasets.datalist import print_summary, write_conversion

    if not getattr(args, "dataset", None):
        args._parser.print_help()
        return 2
    if args.dataset == "pack":
        return _pack(args)
    progress = not args.quiet
    lsnet_items: list = []
    info = {"dataset": args.dataset, "seed": args.seed}
    try:
        if args.dataset == "rsna":
            from pneumonitor.datasets.rsna import convert_rsna

            items, excluded = convert_rsna(args.labels, args.dicom_dir, args.class_info, seed=args.seed,
                                           sizes=args.sizes, min_age=args.min_age, progress=progress)
            info.update(dataset_dir=str(args.dicom_dir.resolve()), sizes=list(args.sizes), min_age=args.min_age)
        elif args.dataset == "covid-collection":
            from pneumonitor.datasets.covid_collection import convert_covid_collection

            items, lsnet_items, excluded = convert_covid_collection(
                args.root, args.out, seed=args.seed, fractions=args.fractions,
                closing_radius=args.closing_radius, progress=progress)
            info.update(dataset_dir=str(args.root.resolve()), closing_radius=args.closing_radius)
        elif args.dataset == "pediatric":
            from pneumonitor.datasets.pediatric import convert_pediatric

            items, excluded = convert_pediatric(args.root, seed=args.seed, fractions=args.fractions)
            info.update(dataset_dir=str(args.root.resolve()))
        elif args.dataset == "jsrt":
            from pneumonitor.datasets.jsrt import convert_jsrt

            items, lsnet_items, excluded = convert_jsrt(args.root, args.out, seed=args.seed,
                                                        fractions=args.fractions, progress=progress)
            info.update(dataset_dir=str(args.root.resolve()))
        elif args.dataset == "covidx-severity":
            from pneumonitor.datasets.covidx_severity import convert_covidx_severity

            items, excluded = convert_covidx_severity(args.root, seed=args.seed, fractions=args.fractions)
            info.update(dataset_dir=str(args.root.resolve()))
        elif args.dataset in ("nih", "rsna-normals", "hannover"):
            from pneumonitor.datasets.hannover import convert_hannover
            from pneumonitor.datasets.nih import convert_nih
            from pneumonitor.datasets.rsna_normals import convert_rsna_normals

            convert = {"nih": convert_nih, "rsna-normals": convert_rsna_normals, "hannover": convert_hannover}
            items, excluded = convert[args.dataset](args.root, seed=args.seed, fractions=args.fractions)
            info.update(dataset_dir=str(args.root.resolve()))
        else:
            from pneumonitor.datasets.mix import build_training_mix

            include = [name.strip() for name in args.include.split(",") if name.strip()]
            items, lsnet_items, excluded = build_training_mix(
                args.data_root, args.out, seed=args.seed, fractions=args.fractions,
                closing_radius=args.closing_radius, include=include, progress=progress)
            info.update(dataset_dir=str(args.data_root.resolve()), include=include, closing_radius=args.closing_radius)
            if str(args.lsnet).lower() != "none" and items:
                from pneumonitor.datasets.lungs import predict_lung_masks
                from pneumonitor.networks.bundle import WeightsNotFound

                try:
                    predicted = predict_lung_masks(items, args.lsnet, args.out / "masks" / "lsnet-lungs",
                                                   progress=progress)
                except WeightsNotFound as error:
                    LOGGER.error("%s (pass --lsnet none to build the mix without predicted lungs)", error)
                    return 1
                info.update(lsnet=str(args.lsnet.resolve()), lsnet_lung_masks_predicted=predicted)
        if "fractions" in args:
            info["fractions"] = list(args.fractions)
    except ValueError as error:
        LOGGER.error("%s", error)
        return 1
    if not items:
        LOGGER.error("no usable images found; nothing written (%d excluded)", len(excluded))
        return 1
    summary = write_conversion(args.out, items, lsnet_items, excluded, info)
    if not args.quiet:
        print(print_summary(summary, args.dataset))
        print(f"\nwrote {args.out.resolve()}/datalist.json" + (" and lsnet_datalist.json" if lsnet_items else ""))
    return 0
