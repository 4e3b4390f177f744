"""Seeded, time-bounded fuzzing of the Deploy app (issue 16): the mutants of ``tests/test_cli_analyze_fuzz.py`` (same
seed and number, ``PNEUMONITOR_FUZZ_SEED`` / ``PNEUMONITOR_FUZZ_CASES``) through ``python apps/deploy``, with the same
checks: no traceback, one row per input, nothing written outside the output folder, memory under the cap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_cli_analyze_fuzz import (  # noqa: F401 - fuzz_folder is a fixture
    CASES,
    check_run,
    fuzz_folder,
    output_folder,
    run_child,
    snapshot,
)
from test_operators import write_models

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fuzzed_dicoms_through_the_deploy_app(fuzz_folder, tmp_path):
    work = fuzz_folder
    out, before = output_folder(work, "out-deploy")
    models = write_models(tmp_path, 0.55, 0.3)["models"]
    proc, peak, seconds = run_child(
        [sys.executable, str(REPO_ROOT / "apps" / "deploy"), "-i", str(work / "in"), "-o", str(out), "-m",
         str(models)], cwd=work)
    rows = check_run(work, out, proc, peak, CASES + 5)
    assert snapshot(work, out) == before, "files outside -o changed"
    stored = json.loads((out / "results.json").read_text())["results"]
    for row in stored:  # an analysed image has its three objects, a refused one none
        assert all((out / row[kind]).is_file() for kind in ("seg", "sr", "sc")) if row["status"] == "ok" else not (
            row["seg"] or row["sr"] or row["sc"]), row
    print(f"deploy: {len(rows)} rows in {seconds:.0f} s, peak {peak / 1e9:.2f} GB")
