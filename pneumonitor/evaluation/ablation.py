"""Table IV ablation: every DLNet x LSNet combination (paper: DLNet-1/DLNet-2 x LSNet/LSNet-Aug) run through
``pneumonitor analyze`` on the same inputs, then evaluated against the same reference.

Each combination's analysis goes to ``OUT/runs/<dlnet>+<lsnet>/`` (an existing ``results.csv`` there is reused, so an
interrupted ablation resumes); the combined tables and figures go to ``OUT``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

LOGGER = logging.getLogger(__name__)


def combination_name(dlnet: str, lsnet: str) -> str:
    """Row label of Table IV, e.g. ``DLNet-2 + LSNet-Aug``."""
    return f"{dlnet} + {lsnet}"


def run_analyses(
    inputs: Sequence[str | Path],
    dlnets: Mapping[str, str | Path],
    lsnets: Mapping[str, str | Path],
    out_dir: str | Path,
    extra_args: Sequence[str] = (),
) -> dict[str, Path]:
    """Run ``pneumonitor analyze`` for each (DLNet, LSNet) pair; returns row label -> results folder.

    Raises:
        RuntimeError: when an analysis fails (its stderr tail is in the message).
    """
    runs: dict[str, Path] = {}
    for dl_name, dl_path in dlnets.items():
        for ls_name, ls_path in lsnets.items():
            name = combination_name(dl_name, ls_name)
            folder = Path(out_dir) / "runs" / "".join(c if c.isalnum() or c in "-+" else "_" for c in f"{dl_name}+{ls_name}")
            if not (folder / "results.csv").is_file():
                command = [sys.executable, "-m", "pneumonitor", "analyze", *map(str, inputs), "--out", str(folder),
                           "--dlnet", str(dl_path), "--lsnet", str(ls_path), *extra_args]
                LOGGER.info("analyzing with %s", name)
                completed = subprocess.run(command, capture_output=True, text=True)
                if completed.returncode != 0 or not (folder / "results.csv").is_file():
                    raise RuntimeError(f"analyze failed for {name} (exit {completed.returncode}): "
                                       f"{completed.stderr.strip()[-800:]}")
            runs[name] = folder
    return runs


__all__ = ["combination_name", "run_analyses"]
