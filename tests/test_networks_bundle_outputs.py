"""The shipped bundles give the outputs recorded before the loader was rewritten (issue 19, "the bundle is the model").

``tests/fixtures/shipped_bundle_outputs.json`` holds, for two sample radiographs, DLNet's probability and heatmap,
LSNet's lung probability (both at the network's input size, sampled on a grid), DLNet's extent map (when its severity
uses the extent head) and the QC gate's probabilities, with
the sha256 of the weights they came from. A bundle whose weights changed since is skipped with that reason:
re-record with ``python tests/test_networks_bundle_outputs.py`` (same loader, new weights).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "shipped_bundle_outputs.json"
SAMPLES = ("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", "gdcm-CR-MONO1-10-chest.dcm")
#: every GRID-th pixel of the network-size maps (DLNet at 448 px: 28 x 28 values per map)
GRID = 16
TOLERANCE = 1e-5


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def network_outputs(sample_dir: Path) -> dict:
    """What the shipped bundles give on :data:`SAMPLES` (read, preprocessed and run by :class:`Analyzer`)."""
    import torch

    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, default_bundle_dir
    from pneumonitor.reading import read_radiograph

    torch.set_num_threads(1)
    analyzer = Analyzer.from_locations(device="cpu", settings=AnalysisSettings(qc="warn", uncertainty="off"))
    images = {}
    for name in SAMPLES:
        radiograph = read_radiograph(sample_dir / name)
        dl_input, ls_input = analyzer.preprocess(radiograph)
        probability, heatmap, lungs, extent = analyzer.infer(dl_input[None], ls_input[None])
        qc = analyzer.quality_check([radiograph])[0]
        images[name] = {
            "pneumonia_probability": float(probability[0]),
            "heatmap_grid": heatmap[0, ::GRID, ::GRID].astype(float).round(7).tolist(),
            "heatmap_mean": float(heatmap[0].mean(dtype=np.float64)),
            "lung_probability_grid": lungs[0, ::GRID, ::GRID].astype(float).round(7).tolist(),
            "lung_probability_mean": float(lungs[0].mean(dtype=np.float64)),
            "qc_probabilities": qc.probabilities,
            # the extent head's maps (channels x input/16 cells), when the shipped DLNet uses one
            "extent_map": None if extent is None else extent[0].astype(float).round(6).tolist(),
        }
    weights = {name: _sha256(default_bundle_dir(name) / "models" / "model.pt") for name in ("dlnet", "lsnet", "qc")}
    return {"weights_sha256": weights, "images": images}


def test_shipped_bundles_give_the_recorded_outputs(dicom_samples):
    recorded = json.loads(FIXTURE.read_text())
    for name, sha in recorded["weights_sha256"].items():
        weights = ROOT / "bundles" / name / "models" / "model.pt"
        if not weights.is_file() or _sha256(weights) != sha:
            pytest.skip(f"{weights} is not the file the outputs were recorded with "
                        "(re-record: python tests/test_networks_bundle_outputs.py)")
    now = network_outputs(dicom_samples[0].parent)
    for name, expected in recorded["images"].items():
        got = now["images"][name]
        for key in ("pneumonia_probability", "heatmap_mean", "lung_probability_mean"):
            assert got[key] == pytest.approx(expected[key], abs=TOLERANCE), (name, key)
        for key in ("heatmap_grid", "lung_probability_grid"):
            np.testing.assert_allclose(got[key], expected[key], atol=TOLERANCE, err_msg=f"{name} {key}")
        if expected.get("extent_map") is not None or got["extent_map"] is not None:
            np.testing.assert_allclose(got["extent_map"], expected["extent_map"], atol=TOLERANCE, err_msg=name)
        for label, p in expected["qc_probabilities"].items():
            assert got["qc_probabilities"][label] == pytest.approx(p, abs=TOLERANCE), (name, label)


if __name__ == "__main__":  # re-record (the same data folder as tests/conftest.py's SHARED_DATA)
    shared_data = Path(os.environ.get("PNEUMONITOR_SHARED_DATA", ROOT.parent / "shared" / "data"))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(network_outputs(shared_data / "cxr-dicom-samples"), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
