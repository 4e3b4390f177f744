"""``pneumonitor monitor``: per-patient disease profiles over time, change labels and an HTML report.

Turns the results.csv of ``pneumonitor analyze`` into per-patient disease profiles (Pneumonia Ratio and 0-8 score
over time), labels each change improved/stable/worse, and writes timelines, PNG plots and a static HTML report
(DIR/index.html). Patient and time come from DICOM (PatientID, AcquisitionDateTime or StudyDate) or, for image
files, from a metadata CSV.
"""

from __future__ import annotations

import argparse
import sys

from pneumonitor.cli import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "monitor", run, description=__doc__,
                         help="group analyze results by patient and time: timelines, plots, change labels, HTML report")
    parser.add_argument("results", nargs="+", help="results.csv file(s) written by 'pneumonitor analyze'")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--metadata", help="CSV giving patient and time per image file (default columns: the "
                        "COVID-19 Image Data Collection's metadata.csv: filename, patientid, offset)")
    parser.add_argument("--image-column", default="filename", help="metadata column naming the image file; "
                        "matched by file name without extension (default: filename)")
    parser.add_argument("--patient-column", default="patientid", help="metadata patient column (default: patientid)")
    parser.add_argument("--time-column", default="offset", help="metadata time column: day offsets or dates "
                        "(default: offset)")
    parser.add_argument("--time-kind", choices=("auto", "offset", "datetime"), default="auto",
                        help="how to read the time column (default: auto: numbers are day offsets, else dates)")
    parser.add_argument("--reference-column", action="append", default=[], metavar="COLUMN",
                        help="metadata column with a reference score (e.g. an expert's 0-8 score; trend agreement "
                        "works on any scale): plotted and compared with --compare-column by trend agreement; "
                        "repeatable")
    parser.add_argument("--compare-column", default="score_total",
                        help="timeline column compared with the reference columns (default: score_total)")
    parser.add_argument("--ratio-margin", type=float, default=5.0,
                        help="change rule: minimum change of the total Pneumonia Ratio, percentage points (default 5)")
    parser.add_argument("--min-score-step", type=float, default=1.0,
                        help="change rule: minimum change of the total score (default 1)")
    parser.add_argument("--uncertainty-z", type=float, default=1.96,
                        help="change rule: margin = z * combined SD when results have ratio_total_sd (default 1.96)")
    parser.add_argument("--classification-threshold", type=float, default=None,
                        help="threshold drawn on the plots (default: from results.json, else 0.62)")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pneumonitor.monitoring import ChangeRule, MetadataColumns, MonitoringInputError
    from pneumonitor.monitoring.compare import describe_against_constant
    from pneumonitor.monitoring.runner import run_monitoring

    if args.reference_column and not args.metadata:
        print("error: --reference-column needs --metadata (the reference scores are read from it)", file=sys.stderr)
        return 2
    try:
        rule = ChangeRule(args.ratio_margin, args.min_score_step, args.uncertainty_z)
        columns = MetadataColumns(
            image=args.image_column,
            patient=args.patient_column,
            time=args.time_column,
            time_kind=args.time_kind,
            extra=tuple(args.reference_column),
        )
        summary = run_monitoring(
            [Path(p) for p in args.results],
            Path(args.out),
            metadata=Path(args.metadata) if args.metadata else None,
            columns=columns,
            compare_column=args.compare_column,
            rule=rule,
            classification_threshold=args.classification_threshold,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except MonitoringInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # invalid change-rule settings and similar
        print(f"error: {error}", file=sys.stderr)
        return 2
    profiles = summary.profiles
    changes = [c for p in profiles for c in p.timeline["change"]]
    print(
        f"{len(profiles)} patients, {summary.n_dated_studies} dated studies "
        f"({changes.count('worse')} worse, {changes.count('improved')} improved, {changes.count('stable')} stable "
        f"changes); {sum(len(p.undated) for p in profiles)} undated, {sum(len(p.skipped) for p in profiles)} "
        f"skipped by analyze, {len(summary.unassigned)} without patient (see unassigned.csv)"
    )
    for column, pooled in summary.pooled.items():
        if pooled.n_transitions:
            print(f"trend agreement {args.compare_column} vs {column}: {pooled.accuracy:.3f} "
                  f"({pooled.n_agree}/{pooled.n_transitions} transitions, {pooled.n_patients} patients); "
                  f"{describe_against_constant(summary.against_constants.get(column, {}), args.compare_column)}")
        else:
            print(f"trend agreement {args.compare_column} vs {column}: no patient with 2 time points having both")
    print(f"report: {summary.out_dir / 'index.html'}")
    return 0
