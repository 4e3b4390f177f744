#!/usr/bin/env python
"""Start-up benchmark of the ``pneumonitor`` command, beside a bare ``import monai`` measured in the same run.

Each command runs as a fresh process, ``--repeats`` times, interleaved (one of each, then the next round), so that a
machine whose load changes during the run slows all of them alike. Wall time from process start to process exit:

- ``python -c "import torch"`` and ``python -c "import monai"``: what any MONAI command pays before its own code;
- ``pneumonitor --help``: the command-line parser alone;
- ``pneumonitor analyze IMAGE --out DIR --no-progress --device cpu`` on one radiograph with the shipped bundles:
  process start to first image done (the process exits right after writing that image's results).

It prints the median (and min/max) of each, the ratio of each median to the bare ``import monai``, and whether
``import monai`` loaded ``monai.deploy`` (it does when the MONAI Deploy SDK is installed in the same python).

    python scripts/bench_startup.py                       # 5 repeats on the NIH frontal DX sample
    python scripts/bench_startup.py --repeats 1 --json out.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: a frontal 1024-px chest DX of NIH ChestX-ray14 (the laterals and phantoms among the samples are refused by QC)
SHARED_DATA = Path(os.environ.get("PNEUMONITOR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_IMAGE = SHARED_DATA / "cxr-dicom-samples" / "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"


def pneumonitor_command() -> list[str]:
    """The console script installed beside this python (the one a user types), else ``python -m pneumonitor``."""
    beside = Path(sys.executable).parent / "pneumonitor"
    found = str(beside) if beside.is_file() else shutil.which("pneumonitor")
    return [found] if found else [sys.executable, "-m", "pneumonitor"]


def commands(image: Path, out_root: Path) -> dict[str, list[str]]:
    cli = pneumonitor_command()
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import monai'": [sys.executable, "-c", "import monai"],
        "pneumonitor --help": [*cli, "--help"],
        "pneumonitor analyze (1 image)": [*cli, "analyze", str(image), "--out", str(out_root / "analyze-{repeat}"),
                                          "--no-progress", "--device", "cpu"],
    }


def time_once(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def monai_loads_deploy() -> bool:
    probe = "import sys, monai; print('monai.deploy' in sys.modules)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "True"


def run(image: Path, repeats: int) -> dict:
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for repeat in range(repeats):
            for name, command in commands(image, Path(tmp)).items():
                command = [part.replace("{repeat}", str(repeat)) for part in command]
                elapsed, proc = time_once(command)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
                seconds.setdefault(name, []).append(elapsed)
    baseline = statistics.median(seconds["python -c 'import monai'"])
    rows = [{"command": name, "median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
             "ratio_to_import_monai": statistics.median(values) / baseline, "seconds": values}
            for name, values in seconds.items()]
    return {"python": sys.executable, "image": str(image), "repeats": repeats,
            "import_monai_loads_monai_deploy": monai_loads_deploy(), "rows": rows}


def markdown(result: dict) -> str:
    lines = ["| command | median | min–max | / import monai |", "|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| `{row['command']}` | {row['median_s']:.2f} s | {row['min_s']:.2f}–{row['max_s']:.2f} s "
                     f"| {row['ratio_to_import_monai']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the radiograph given to analyze")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.image.is_file():
        parser.error(f"no image at {args.image} (give one with --image)")
    result = run(args.image, args.repeats)
    print(f"{result['repeats']} repeats, {result['python']}; import monai loads monai.deploy: "
          f"{'yes' if result['import_monai_loads_monai_deploy'] else 'no'}")
    print(markdown(result))
    if args.json:
        from pneumonitor.publishing import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
