"""``pneumonitor fit-extent-head``: fit DLNet's extent head to the experts' geographic-extent scores.

Reads the DLNet datalist (``pneumonitor datasets mix``): the expert-scored images of the training split (total 0-8
scores, per-lung 0-4 scores where given; each also mirrored, its lungs' scores swapped, unless --no-mirror) are the fit, those of the validation split choose the ridge strength by the
0-8 score's MAE (images below the classification threshold score 0, as in ``analyze``; --classification-threshold 0
judges the head alone, for a member of an ensemble); the test split is not read. Runs the bundle's DLNet and the LSNet exactly as ``pneumonitor analyze``
does, then writes the head into the DLNet bundle (``models/model.pt``; ``severity_rule`` ``extent-head`` and the fit's
record in ``configs/inference.json``) unless --dry-run. Prints the validation table (MAE, bias, r per strength).
Retraining DLNet (``serve_trained_weights``) sets the rule back to the paper's: fit again after every retraining.

With --lung-classifier the head also gets the lung classifier (logistic regression on the lung-pooled features of
every training image, penalty chosen on validation by AUC) and the bundle's ``probability_source`` becomes
``lung-classifier``: choose the classification threshold again afterwards (``pneumonitor evaluate --split validation
--save-operating-point``). This reads every training and validation image (about 8 min for 4,600 on 2 cores).
"""

from __future__ import annotations

import argparse
import sys

from pneumonitor.cli import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "fit-extent-head", run, description=__doc__,
                         help="fit DLNet's extent head (severity) to expert extent scores of the training split")
    parser.add_argument("--datalist", required=True, help="the DLNet datalist JSON (training and validation splits)")
    parser.add_argument("--dlnet", help="DLNet bundle folder to fit and write (default: the shipped bundles/dlnet)")
    parser.add_argument("--lsnet", help="LSNet bundle folder (default: the shipped one)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--normals", type=int, default=0,
                        help="also fit this many adult normal radiographs per normal source of the training split "
                        "as extent 0 (default 0: expert-scored images only)")
    parser.add_argument("--alphas", default=None,
                        help="comma-separated ridge strengths tried on validation (default: "
                        "pneumonitor.engines.extent_head.ALPHAS, 1 to 10000 by decades)")
    parser.add_argument("--lung-classifier", action="store_true",
                        help="also fit the lung classifier on every training image (probability_source lung-classifier)")
    parser.add_argument("--no-mirror", action="store_true",
                        help="do not add each training image mirrored left-right (scores of the lungs swapped)")
    parser.add_argument("--classification-threshold", type=float, default=None,
                        help="the gate under which the ridge strength is judged: validation images below it score 0 "
                        "(default: the bundle's operating point); 0 judges the head alone on every expert-scored "
                        "image, the choice for a member of an ensemble, whose gate is the ensemble's probability")
    parser.add_argument("--report", help="write the fit's record (validation table) to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="fit and print, do not write the bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


#: adult sources whose label-0 images are normal radiographs (no pneumonia, no other finding)
NORMAL_SOURCES = ("nih", "rsna-normals", "jsrt")


def scored(item: dict) -> bool:
    """Whether a datalist item carries an expert extent score (total or per lung)."""
    return any(item.get(k) not in (None, "") for k in ("severity", "severity_right", "severity_left"))


def run(args: argparse.Namespace) -> int:
    import random
    from pathlib import Path

    from tqdm import tqdm

    from pneumonitor.datasets.datalist import load_datalist
    from pneumonitor.engines.extent_head import (
        ALPHAS,
        choose_and_fit,
        choose_lung_classifier,
        collect_examples,
        require_single_dlnet,
        write_extent_head,
    )
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, default_bundle_dir
    from pneumonitor.networks import WeightsNotFound
    from pneumonitor.publishing import write_json

    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()] if args.alphas else ALPHAS
        datalist = load_datalist(Path(args.datalist))
        # the paper's rule here: the head is what is being fitted, whatever the bundle says now
        analyzer = Analyzer.from_locations(args.dlnet, args.lsnet, device=args.device, settings=AnalysisSettings(
            qc="off", uncertainty="off", severity_rule="heatmap-threshold", probability_source="classification-head"))
    except (ValueError, WeightsNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        require_single_dlnet(analyzer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    splits, everything = {}, {}
    for split in ("training", "validation"):
        items = [i for i in datalist.get(split, []) if scored(i)]
        if split == "training" and args.normals > 0:
            rng = random.Random(0)
            for source in NORMAL_SOURCES:
                normals = [i for i in datalist.get(split, []) if i.get("source") == source and int(i.get("label", 1)) == 0
                           and not scored(i)]
                items += rng.sample(normals, min(args.normals, len(normals)))
        if args.lung_classifier:  # every image: the classifier learns from both labels; the extent from `items`
            taken = {id(i) for i in items}
            rest = [i for i in datalist.get(split, []) if id(i) not in taken]
            bar = tqdm(total=len(rest), desc=f"{split}: features (lung classifier)", unit="img", disable=args.quiet)
            everything[split] = collect_examples(analyzer, rest, progress=lambda done, total: bar.update(1),
                                                 mirror=split == "training" and not args.no_mirror)
            bar.close()
        if not items:
            print(f"error: the {split} split of {args.datalist} has no expert-scored image", file=sys.stderr)
            return 2
        bar = tqdm(total=len(items), desc=f"{split}: features", unit="img", disable=args.quiet)
        splits[split] = collect_examples(analyzer, items, progress=lambda done, total: bar.update(1),
                                         mirror=split == "training" and not args.no_mirror)
        bar.close()
    gate = analyzer.settings.classification_threshold if args.classification_threshold is None \
        else args.classification_threshold
    try:
        fit = choose_and_fit(splits["training"], splits["validation"], gate, alphas)
        classifier = choose_lung_classifier(
            splits["training"] + everything["training"], splits["validation"] + everything["validation"]
        ) if args.lung_classifier else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"extent head: {fit.n_training} training examples (images and their mirrors), {fit.n_validation} "
          f"expert-scored validation images, classification threshold {gate}")
    print("alpha      val MAE  bias    r")
    for row in fit.table:
        mark = "  <- chosen" if row["alpha"] == fit.alpha else ""
        print(f"{row['alpha']:<10g} {row['mae']:<8.3f} {row['bias']:<+7.3f} {row['r']:.3f}{mark}")
    if classifier is not None:
        print(f"lung classifier: {classifier.n_training} training examples")
        print("penalty    val AUC")
        for row in classifier.table:
            mark = "  <- chosen" if row["penalty"] == classifier.penalty else ""
            print(f"{row['penalty']:<10g} {row['auc']:.4f}{mark}")
    if args.report:
        write_json(Path(args.report), {**fit.record(), "lung_classifier": classifier.record() if classifier else None},
                   indent=1)
    if not args.dry_run:
        bundle = Path(args.dlnet) if args.dlnet else default_bundle_dir("dlnet")
        print(f"wrote {write_extent_head(bundle, fit, classifier)} and {bundle / 'models' / 'model.pt'}")
        if classifier is not None:
            print("the probability now comes from the lung classifier: choose the classification threshold again "
                  "(pneumonitor evaluate --split validation --save-operating-point)")
    return 0
