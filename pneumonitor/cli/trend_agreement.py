"""``pneumonitor trend-agreement``: compare two disease profiles per patient (e.g. model vs expert scores).

Trend agreement of Amer et al. 2020 (Sec. V-C-3): each time point after a patient's first gets the label 1 if
value/previous > 1 else 0 (previous 0: 1 if the value is above 0); the agreement is the fraction of equal labels.
Both columns from one table (e.g. DIR/timelines.csv of ``pneumonitor monitor``), or column A from TABLE and column B
from OTHER, joined on patient and time. Printed beside the trivial profiles on the same transitions (always rises,
never rises) and, with a CI over patients, against the better of the two.
"""

from __future__ import annotations

import argparse
import sys

from pneumonitor.cli import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "trend-agreement", run, description=__doc__,
        help="trend agreement between two profiles per patient (label 1 if value/previous > 1, else 0)",
    )
    parser.add_argument("table", help="CSV with patient, time and column A (and B when OTHER is not given)")
    parser.add_argument("other", nargs="?", help="optional second CSV holding column B")
    parser.add_argument("--a", required=True, dest="a_column", help="first profile column (e.g. score_total)")
    parser.add_argument("--b", required=True, dest="b_column", help="second profile column (e.g. an expert score)")
    parser.add_argument("--patient-column", default="patient_id", help="patient column (default: patient_id)")
    parser.add_argument("--time-column", default="day", help="time column, numbers or dates (default: day)")
    parser.add_argument("--out", help="write the per-patient table to this CSV")
    parser.add_argument("--n-bootstrap", type=int, default=1000,
                        help="resamples of patients for the CI against the constant profiles (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")


def run(args: argparse.Namespace) -> int:
    from pneumonitor.monitoring import MonitoringInputError
    from pneumonitor.monitoring.compare import (against_constant_profiles, compare_profiles, describe_against_constant,
                                                join_profiles, read_table)
    from pneumonitor.publishing import atomic_path

    try:
        table = read_table(args.table)
        other = read_table(args.other) if args.other else None
        joined = join_profiles(table, other, args.a_column, args.b_column, args.patient_column, args.time_column)
        per_patient, pooled = compare_profiles(joined)
    except MonitoringInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # negative values and similar
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        with atomic_path(args.out) as tmp:
            per_patient.to_csv(tmp, index=False)
    if not pooled.n_transitions:
        print(f"no patient has 2 time points with both {args.a_column} and {args.b_column}", file=sys.stderr)
        return 1
    print(
        f"trend agreement {args.a_column} vs {args.b_column}: {pooled.accuracy:.3f} "
        f"({pooled.n_agree}/{pooled.n_transitions} transitions agree, {pooled.n_patients} patients with >= 2 points; "
        f"mean per patient {pooled.mean_per_patient:.3f})"
    )
    baselines = against_constant_profiles(joined, args.n_bootstrap, args.seed)
    print(f"baselines on the same transitions: {describe_against_constant(baselines, args.a_column)}")
    return 0
