"""The fast path (threads decoding ahead, batches) gives the same numbers as the simple path (one image at a time)."""

import numpy as np
import pytest
import torch

from pneumonitor.networks import DLNet, LSNet, load_network, save_checkpoint
from pneumonitor.inference.analyzer import Analyzer, _prefetch, result_row


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck")
    torch.manual_seed(1)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    ls = LSNet(width=0.125)
    with torch.no_grad():
        ls.head.bias.fill_(3.0)  # mostly lung, with a random boundary
        dl.classification_head.layers[-1].bias.fill_(3.0)
    save_checkpoint(dl, folder / "dl.pt", [96, 96])
    save_checkpoint(ls, folder / "ls.pt", [96, 96])
    return Analyzer(load_network(folder / "dl.pt", "DLNet"), load_network(folder / "ls.pt", "LSNet"))


NUMBERS = ("pneumonia_probability", "ratio_total", "ratio_right", "ratio_left", "score_total")


def test_fast_path_equals_simple_path(analyzer, dicom_samples):
    inputs = list(dicom_samples) + [dicom_samples[0].parent / "missing.dcm"]
    simple = [result_row(r) for r in analyzer.analyze(inputs, batch_size=1, workers=0, progress=False)]
    fast = [result_row(r) for r in analyzer.analyze(inputs, batch_size=4, workers=2, progress=False)]
    assert [r["image"] for r in simple] == [r["image"] for r in fast] == [str(p.absolute()) for p in inputs]
    assert [r["status"] for r in simple] == [r["status"] for r in fast]
    assert sum(r["status"] == "ok" for r in simple) >= 3
    for a, b in zip(simple, fast):
        for key in NUMBERS:
            if a[key] == "":
                assert b[key] == ""
            else:
                assert b[key] == pytest.approx(a[key], abs=0.01), key
    assert set(analyzer.stage_seconds) >= {"decode", "preprocess", "dlnet", "lsnet", "severity"}


def test_prefetch_keeps_order_and_bounds_lookahead():
    started = []

    def work(x):
        started.append(x)
        return x * x

    results = []
    for value in _prefetch(list(range(50)), work, workers=3, depth=4):
        results.append(value)
        assert len(started) <= len(results) + 4 + 1
    assert results == [x * x for x in range(50)]
    assert list(_prefetch([1, 2], work, workers=0, depth=1)) == [1, 4]


def test_thresholds_default_to_the_weights_operating_point(tmp_path):
    from pneumonitor.inference.analyzer import AnalysisSettings
    from pneumonitor.severity import CLASSIFICATION_THRESHOLD, HEATMAP_THRESHOLD

    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    ls = LSNet(width=0.125)
    save_checkpoint(dl, tmp_path / "plain.pt", [64, 64])
    save_checkpoint(dl, tmp_path / "tuned.pt", [64, 64], classification_threshold=0.3, heatmap_threshold=0.45)
    save_checkpoint(ls, tmp_path / "ls.pt", [64, 64])
    lsnet = load_network(tmp_path / "ls.pt", "LSNet")
    plain = Analyzer(load_network(tmp_path / "plain.pt", "DLNet"), lsnet)
    assert (plain.settings.classification_threshold, plain.settings.heatmap_threshold) == (
        CLASSIFICATION_THRESHOLD, HEATMAP_THRESHOLD)
    tuned_net = load_network(tmp_path / "tuned.pt", "DLNet")
    tuned = Analyzer(tuned_net, lsnet)
    assert (tuned.settings.classification_threshold, tuned.settings.heatmap_threshold) == (0.3, 0.45)
    explicit = Analyzer(tuned_net, lsnet, settings=AnalysisSettings(heatmap_threshold=0.9))
    assert (explicit.settings.classification_threshold, explicit.settings.heatmap_threshold) == (0.3, 0.9)
    with pytest.raises(ValueError, match="heatmap_threshold"):
        AnalysisSettings(heatmap_threshold=1.5).resolved()


def test_half_precision_checkpoint_loads_and_predicts_the_same(tmp_path):
    from pneumonitor.networks import save_half_precision

    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16)).eval()
    torch.save(dl.state_dict(), tmp_path / "full.pt")  # what the bundle's CheckpointSaver writes
    save_half_precision(tmp_path / "full.pt", tmp_path / "half.pt")
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    stored = torch.load(tmp_path / "half.pt", weights_only=True)
    assert {v.dtype for v in stored.values()} == {torch.float16, torch.int64}  # BatchNorm counters stay integers
    loaded = load_network(tmp_path / "half.pt", "DLNet", image_size=(64, 64)).network
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (p_full, m_full), (p_half, m_half) = dl(x), loaded(x)
    assert torch.allclose(torch.sigmoid(p_full), torch.sigmoid(p_half), atol=2e-3)
    assert torch.allclose(m_full, m_half, atol=2e-2 * float(m_full.abs().max()) + 1e-6)
