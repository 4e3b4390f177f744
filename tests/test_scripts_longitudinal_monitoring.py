"""scripts/covid_longitudinal_monitoring.py: a model's trend agreement is measured on patients it never saw."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "covid_longitudinal_monitoring.py"


def _script():
    spec = importlib.util.spec_from_file_location("covid_longitudinal_monitoring", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_patients_of_the_mix_are_left_out(shared_data: Path, tmp_path: Path):
    script = _script()
    series = script.frontal_series(shared_data)
    patients = sorted(series["patientid"].astype(str).unique())
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({
        "training": [{"patient_id": f"covid-collection:{p}"} for p in patients[:10]] + [{"patient_id": "nih:1"}],
        "test": [{"patient_id": f"covid-collection:{patients[10]}"}],
    }))
    seen = script.training_patients(datalist)
    assert seen == set(patients[:10])  # only the collection's training patients, without the prefix
    out = tmp_path / "out"
    # the annotation profile is cheap; what matters is which patients the report still holds
    assert script.main(["--source", "annotations", "--out", str(out), "--data", str(shared_data),
                        "--exclude-training", str(datalist)]) == 0
    summary = json.loads((out / "annotations" / "summary.json").read_text())
    assert summary["excluded_training_patients"] == 10
    import pandas as pd

    shown = set(pd.read_csv(out / "annotations" / "monitoring" / "timelines.csv", dtype=str)["patient_id"])
    assert shown and not shown & set(patients[:10])
    assert script.main(["--source", "annotations", "--out", str(out), "--data", str(shared_data),
                        "--exclude-training", str(tmp_path / "absent.json")]) == 2
