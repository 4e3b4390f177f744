"""How well do the uncertainty columns of ``pneumonitor analyze`` describe the error? Coverage on test patients.

    OMP_NUM_THREADS=1 python scripts/measure_uncertainty.py [--data ../shared/data] [--out runs/uncertainty]
        [--uncertainty flip|flip+mc] [--limit N]

The test patients of the COVID-19 Image Data Collection (the datasets' default patient-level split, seed 0: the
split DLNet/LSNet are trained and evaluated on) whose images carry an expert 0-8 geographic-extent score are run
through the shipped weights with ``--qc on``. Reported (``coverage.json`` in OUT): how many images the QC gate refused,
the share of ``ok`` images whose ``[score_total_low, score_total_high]`` contains the expert score (rounded), the
same share for the point score alone (an interval that is just the point), the mean interval width, the share
flagged ``uncertain``, and the mean absolute score error among certain and uncertain images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import torch

    from pneumonitor.datasets.covid_collection import convert_covid_collection
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, analyze_to_folder
    from pneumonitor.publishing import write_json
    from pneumonitor.results import write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("runs/uncertainty"))
    parser.add_argument("--uncertainty", default="flip", choices=["flip", "flip+mc"])
    parser.add_argument("--limit", type=int, default=0, help="at most N images (0: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        items, _, _ = convert_covid_collection(args.data / "covid-chestxray-dataset", scratch, progress=False)
    tests = [i for i in items if i.get("split") == "test" and i.get("severity") is not None]
    tests = tests[: args.limit] if args.limit else tests
    expert = {str(Path(i["image"]).resolve()): float(i["severity"]) for i in tests}
    analyzer = Analyzer.from_locations(settings=AnalysisSettings(qc="on", uncertainty=args.uncertainty), device="cpu")
    rows = analyze_to_folder(analyzer, [Path(i["image"]) for i in tests], args.out, progress=False, workers=0)
    write_results(rows, args.out, analyzer.describe())
    ok = [r for r in rows if r["status"] == "ok"]
    truth = np.array([round(expert[str(Path(r["image"]).resolve())]) for r in ok])
    score = np.array([int(r["score_total"]) for r in ok])
    low = np.array([int(r["score_total_low"]) for r in ok])
    high = np.array([int(r["score_total_high"]) for r in ok])
    uncertain = np.array([int(r["uncertain"]) for r in ok], bool)
    error = np.abs(score - truth)
    report = {
        "images": len(rows),
        "qc_refused": sum(r["status"] == "skipped" and r["reason"].startswith("image QC") for r in rows),
        "other_skips": sum(r["status"] == "skipped" and not r["reason"].startswith("image QC") for r in rows),
        "ok": len(ok),
        "uncertainty": args.uncertainty,
        "score_interval_coverage": round(float(np.mean((low <= truth) & (truth <= high))), 3) if ok else None,
        "point_score_exact": round(float(np.mean(score == truth)), 3) if ok else None,
        "mean_interval_width": round(float(np.mean(high - low)), 2) if ok else None,
        "uncertain_share": round(float(uncertain.mean()), 3) if ok else None,
        "mae_certain": round(float(error[~uncertain].mean()), 2) if (~uncertain).any() else None,
        "mae_uncertain": round(float(error[uncertain].mean()), 2) if uncertain.any() else None,
        "mean_probability_sd": round(float(np.mean([float(r["pneumonia_probability_sd"]) for r in ok])), 4) if ok else None,
        "mean_ratio_total_sd": round(float(np.mean([float(r["ratio_total_sd"]) for r in ok])), 2) if ok else None,
        "dlnet_sha256": analyzer.dlnet.sha256,
    }
    write_json(args.out / "coverage.json", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
