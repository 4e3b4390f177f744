"""The analyze benchmark runs (smoke mode: 2 images, compact configuration). No timing is asserted."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_analyze.py"


def test_bench_analyze_smoke(dicom_samples, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "compact" in proc.stdout and "e2e/fwd" in proc.stdout
    import json

    (result,) = json.loads(out.read_text())
    assert result["ok"] == 2 and result["forward_img_s"] > 0 and result["end_to_end_img_s"] > 0
    assert {"decode", "preprocess", "dlnet", "lsnet", "severity", "write"} <= set(result["stage_seconds_end_to_end"])
    assert result["mc_samples"] == 8 and result["mc_dropout_s"] > 0 and result["mc_whole_passes_s"] > 0
