"""``pneumonitor evaluate`` and ``pneumonitor ablation``: the paper's Tables II-IV and figures from
``pneumonitor analyze`` results and reference labels.

``evaluate`` pairs each ``--results`` folder with its ``--reference`` (a datalist JSON from ``pneumonitor datasets``
or a CSV; one reference may serve all results) and writes to ``--out``: ``metrics.json``, ``report.html``, ``tables.md`` (Tables
II/III/IV and the mAP sweep), ``per_image.csv``, ``roc.png``, ``map_vs_threshold.png``, ``severity_scatter*.png``,
``severity_confusion*.png`` (each when the reference allows it).

``ablation`` runs ``pneumonitor analyze`` for every ``--dlnet`` x ``--lsnet`` pair (or takes finished ``--run``
folders) and evaluates them all against one reference (Table IV).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from pneumonitor.cli import add_command

LOGGER = logging.getLogger(__name__)


def _threshold(text: str) -> float | str | None:
    if text == "auto":
        return None
    if text == "operating":
        return text
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected 'operating', 'auto' or a number in [0,1], got {text!r}") from error
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {value}")
    return value


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must lie in [0, 1], got {text!r}")
    return values


def _named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, value


def _add_metric_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="test",
                        help="datalist split to evaluate: training, validation, test or all (default test)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--threshold", type=_threshold, default="operating",
                        help="classification threshold: 'operating' = the one `pneumonitor analyze` used (the weights' "
                        "operating point, from results.json; default), 'auto' = the ROC point nearest (0,1) of the "
                        "evaluated data (tuned on them, and labelled so), or a number")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--heatmap-thresholds", type=_thresholds,
                        default=[0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9],
                        help="heatmap thresholds of the mAP sweep (default 0.5,0.55,...,0.9)")
    parser.add_argument("--empty-policy", choices=("skip", "one"), default="skip",
                        help="images with no true and no predicted box: skip (RSNA, default) or count as 1")
    parser.add_argument("--no-gate", action="store_true",
                        help="predict boxes on every image, also those analyze called negative")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "evaluate", run, description=__doc__,
                         help="reproduce the paper's tables/figures from analyze results and reference labels")
    parser.add_argument("--results", nargs="+", required=True, type=Path,
                        help="results folder(s) (or results.csv) of `pneumonitor analyze`")
    parser.add_argument("--reference", nargs="+", required=True, type=Path,
                        help="reference datalist JSON or CSV, one per --results or one for all")
    parser.add_argument("--names", nargs="+", help="row names of the tables (default Dataset 1, Dataset 2, ...)")
    parser.add_argument("--save-operating-point", type=Path, metavar="BUNDLE",
                        help="write the classification threshold (ROC point nearest (0,1)) and the heatmap threshold "
                        "(lowest 0-8 score MAE against expert scores, n >= 30) of this evaluation into "
                        "BUNDLE/configs/inference.json, where "
                        "`pneumonitor analyze` takes its defaults from; needs --split validation and one --results")
    _add_metric_options(parser)

    ablation = add_command(subparsers, "ablation", run_ablation, description=__doc__,
                           help="Table IV: evaluate every DLNet x LSNet combination on the same reference")
    ablation.add_argument("--reference", required=True, type=Path, help="reference datalist JSON or CSV")
    ablation.add_argument("--inputs", nargs="+", type=Path, default=[],
                          help="images to analyze (default: the images of the reference split)")
    ablation.add_argument("--dlnet", action="append", type=_named, default=[], metavar="NAME=CKPT",
                          help="a DLNet checkpoint, e.g. DLNet-1=dlnet1.pt (repeat)")
    ablation.add_argument("--lsnet", action="append", type=_named, default=[], metavar="NAME=CKPT",
                          help="an LSNet checkpoint, e.g. LSNet-Aug=lsnet_aug.pt (repeat)")
    ablation.add_argument("--run", action="append", type=_named, default=[], metavar="NAME=DIR",
                          help="an already analyzed combination, e.g. 'DLNet-2 + LSNet=runs/d2l' (repeat)")
    _add_metric_options(ablation)
    ablation.set_defaults(split="all")


def _evaluate(named_pairs: list[tuple[str, Path, Path]], args: argparse.Namespace) -> int:
    from pneumonitor.evaluation.matching import load_reference, load_results, match
    from pneumonitor.evaluation.tables import markdown_report, write_report
    from pneumonitor.evaluation.suite import EvaluationSettings, evaluate_matched

    base_settings = EvaluationSettings(
        n_bootstrap=args.n_bootstrap, seed=args.seed,
        heatmap_thresholds=args.heatmap_thresholds, empty_policy=args.empty_policy,
        gate_by_classification=not args.no_gate)
    evaluations = []
    try:
        for name, results_path, reference_path in named_pairs:
            table, results_dir = load_results(results_path)
            settings = replace(base_settings, **classification_threshold(args.threshold, results_dir))
            reference = load_reference(reference_path, args.split)
            matched = match(table, results_dir, reference)
            if not matched.pairs:
                LOGGER.error("%s: no reference image of %s (split %s) matches %s (%d unmatched)", name,
                             reference_path, args.split, results_path, len(matched.unmatched_reference))
                return 1
            if matched.unmatched_reference:
                LOGGER.warning("%s: %d reference images have no result (first: %s)", name,
                               len(matched.unmatched_reference), matched.unmatched_reference[0])
            evaluation = evaluate_matched(name, matched, settings)
            evaluation.metrics.update(results=str(results_dir), reference=str(Path(reference_path).resolve()),
                                      split=args.split)
            evaluations.append(evaluation)
    except ValueError as error:
        LOGGER.error("%s", error)
        return 1
    settings_json = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(base_settings).items()}
    settings_json["threshold"] = {e.name: e.metrics.get("classification", {}).get("threshold_rule") for e in evaluations}
    written = write_report(args.out, evaluations, settings_json)
    if getattr(args, "save_operating_point", None):
        from pneumonitor.evaluation.suite import operating_point

        try:
            chosen = operating_point(evaluations[0].metrics)
        except ValueError as error:
            LOGGER.error("cannot save an operating point: %s", error)
            return 1
        from pneumonitor.networks.bundle import update_inference_config

        # named points chosen earlier belong to the earlier threshold: dropped when these data name none
        stale = () if "operating_points" in chosen else ("operating_points",)
        config_path = update_inference_config(args.save_operating_point, remove=stale, **chosen)
        print(f"operating point {chosen} -> {config_path}")
    if not args.quiet:
        print(markdown_report([e.metrics for e in evaluations]))
        print(f"wrote {', '.join(sorted(p.name for p in written.values()))} to {args.out.resolve()}")
    return 0


def classification_threshold(choice: float | str | None, results_dir: Path) -> dict:
    """``EvaluationSettings`` fields for ``--threshold``: a number as given; ``"operating"`` the threshold analyze
    used (results.json ``settings.classification_threshold``); ``None`` (auto) tuned on the evaluated data."""
    if choice is None:
        return {"threshold": None, "threshold_rule": "nearest (0,1) on these data (tuned on the evaluated data)"}
    if choice != "operating":
        return {"threshold": float(choice), "threshold_rule": "given on the command line"}
    from pneumonitor.results import read_settings

    try:
        value = float(read_settings(results_dir)["classification_threshold"])
    except (ValueError, KeyError, TypeError):
        LOGGER.warning("%s records no classification threshold: tuning one on the evaluated data",
                       results_dir / "results.json")
        return {"threshold": None,
                "threshold_rule": "nearest (0,1) on these data (tuned on the evaluated data: no operating point "
                                  "recorded in results.json)"}
    return {"threshold": float(value), "threshold_rule": "the operating point analyze used (results.json)"}


def run(args: argparse.Namespace) -> int:
    results, references = list(args.results), list(args.reference)
    if args.save_operating_point is not None:
        if args.threshold == "operating":  # the operating point is what is being chosen here
            args.threshold = None
        if args.split != "validation" or len(results) != 1:
            LOGGER.error("--save-operating-point chooses thresholds on one validation split: "
                         "use --split validation and one --results")
            return 2
        if not (args.save_operating_point / "configs" / "inference.json").is_file():
            LOGGER.error("%s has no configs/inference.json", args.save_operating_point)
            return 2
    if len(references) not in (1, len(results)):
        LOGGER.error("give one --reference, or one per --results (%d results, %d references)", len(results), len(references))
        return 2
    references = references * len(results) if len(references) == 1 else references
    names = list(args.names or [])
    if names and len(names) != len(results):
        LOGGER.error("--names needs one name per --results")
        return 2
    names = names or [f"Dataset {i + 1}" for i in range(len(results))]
    return _evaluate(list(zip(names, results, references)), args)


def run_ablation(args: argparse.Namespace) -> int:
    from pneumonitor.evaluation.ablation import run_analyses
    from pneumonitor.evaluation.matching import load_reference

    pairs: list[tuple[str, Path, Path]] = [(name, Path(folder), args.reference) for name, folder in args.run]
    if args.dlnet or args.lsnet:
        if not (args.dlnet and args.lsnet):
            LOGGER.error("give at least one --dlnet and one --lsnet checkpoint (or finished --run folders)")
            return 2
        inputs = list(args.inputs)
        if not inputs:
            try:
                inputs = [item["image"] for item in load_reference(args.reference, args.split)]
            except ValueError as error:
                LOGGER.error("%s", error)
                return 1
        try:
            runs = run_analyses(inputs, dict(args.dlnet), dict(args.lsnet), args.out)
        except RuntimeError as error:
            LOGGER.error("%s", error)
            return 1
        pairs += [(name, folder, args.reference) for name, folder in runs.items()]
    if not pairs:
        LOGGER.error("nothing to evaluate: give --dlnet/--lsnet checkpoints or --run NAME=DIR folders")
        return 2
    return _evaluate(pairs, args)
