"""The start-up benchmark runs (one repeat of each command). No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_startup.py"
NIH_DX = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"


def test_bench_startup_runs_every_command_once(dicom_samples, tmp_path):
    (image,) = [path for path in dicom_samples if path.name == NIH_DX]
    out = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--image", str(image), "--json", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| `pneumonitor analyze (1 image)` |" in proc.stdout
    result = json.loads(out.read_text())
    by_command = {row["command"]: row for row in result["rows"]}
    assert set(by_command) == {"python -c 'import torch'", "python -c 'import monai'", "pneumonitor --help",
                               "pneumonitor analyze (1 image)"}
    assert all(len(row["seconds"]) == 1 and row["median_s"] > 0 for row in by_command.values())
    assert by_command["python -c 'import monai'"]["ratio_to_import_monai"] == 1.0
