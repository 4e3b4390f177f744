"""The fast path (threads decoding ahead, batches) gives the same numbers as the simple path (one image at a time)."""

import numpy as np
import pytest
import torch

from pneumonitor.networks import DLNet, LSNet, load_bundle, save_bundle
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
    dlnet = load_bundle(save_bundle(dl, folder / "dl", [96, 96]))
    return Analyzer(dlnet, load_bundle(save_bundle(ls, folder / "ls", [80, 96])))


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


def test_analyze_one_is_one_image_of_analyze(analyzer, dicom_samples):
    """analyze_one (the Label app's pneumonia infer) gives the row analyze gives that image in a batch."""
    from pneumonitor.reading import read_radiograph

    batch = [result_row(r) for r in analyzer.analyze(dicom_samples[:2], batch_size=2, workers=0, progress=False)]
    for path, expected in zip(dicom_samples[:2], batch):
        one = result_row(analyzer.analyze_one(read_radiograph(path)))
        assert one["status"] == expected["status"]
        for key in NUMBERS + ("pneumonia_probability_sd", "ratio_total_sd"):
            if expected[key] == "":
                assert one[key] == ""
            else:
                assert one[key] == pytest.approx(expected[key], abs=0.01), key


def test_per_network_entry_points_give_what_the_pipeline_uses(analyzer, dicom_samples):
    """lungs / pneumonia at the radiograph's size: the same numbers analyze resizes and thresholds; an Analyzer with
    one network serves that network's entry points."""
    from pneumonitor.inference.analyzer import _resize
    from pneumonitor.reading import read_radiograph

    radiograph = read_radiograph(dicom_samples[0])
    probability, heatmap, lungs, _ = analyzer.infer(*(x[None] for x in analyzer.preprocess(radiograph)))
    assert lungs.shape[1:] == (80, 96) and heatmap.shape[1:] == (96, 96)
    dl_only = Analyzer(analyzer.dlnet, None)
    p, full_heatmap = dl_only.pneumonia(radiograph)
    assert p == pytest.approx(float(probability[0]), abs=1e-6) and full_heatmap.shape == radiograph.shape
    np.testing.assert_allclose(full_heatmap, _resize(heatmap[0], radiograph.shape), atol=1e-6)
    full_lungs = Analyzer(None, analyzer.lsnet).lungs(radiograph)
    np.testing.assert_allclose(full_lungs, _resize(lungs[0], radiograph.shape), atol=1e-6)
    mask = analyzer.lung_mask(full_lungs)
    assert mask.dtype == bool and mask.shape == radiograph.shape


def test_mc_dropout_varies_only_through_dropout_and_keeps_batch_norm_frozen(analyzer):
    from pneumonitor.networks import LoadedNetwork

    dlnet = analyzer.dlnet.network
    x = torch.randn(1, 3, 96, 96)
    running = dlnet.backbone.bn1.running_mean.clone()
    probabilities = analyzer.mc_dropout(x, samples=16, seed=0)[:, 0]
    assert probabilities.shape == (16,) and np.var(probabilities) > 0
    np.testing.assert_array_equal(probabilities, analyzer.mc_dropout(x, samples=16, seed=0)[:, 0])  # seeded
    assert torch.equal(dlnet.backbone.bn1.running_mean, running) and not any(m.training for m in dlnet.modules())
    # the backbone once and the head per sample gives what whole passes with dropout active give
    torch.manual_seed(0)
    for module in dlnet.classification_head.modules():
        module.train(isinstance(module, torch.nn.Dropout))
    with torch.no_grad():
        whole = torch.sigmoid(torch.cat([dlnet(x)[0] for _ in range(16)])[:, 0]).numpy()
    dlnet.eval()
    np.testing.assert_allclose(probabilities, whole, atol=1e-6)
    no_dropout = DLNet("resnet18", dense_units=(32, 16), dropout=0.0, fpn_channels=16, localization_maps=8)
    plain = Analyzer(LoadedNetwork(no_dropout, (96, 96), analyzer.dlnet.source, "", {}), None)
    with pytest.raises(ValueError, match="no active dropout"):
        plain.mc_dropout(x, samples=4)



def test_mc_dropout_of_a_torchscript_dlnet_gives_the_eager_samples(analyzer):
    """The Deploy app serves DLNet as TorchScript, where dropout layers are no torch.nn.Dropout instances: MC-dropout
    still finds and switches them, and gives the eager network's samples with the same seed."""
    from dataclasses import replace

    x = torch.randn(1, 3, 96, 96)
    scripted = torch.jit.script(analyzer.dlnet.network)
    served = Analyzer(replace(analyzer.dlnet, network=scripted), None)
    probabilities = served.mc_dropout(x, samples=8, seed=0)[:, 0]
    assert np.var(probabilities) > 0
    np.testing.assert_allclose(probabilities, analyzer.mc_dropout(x, samples=8, seed=0)[:, 0], atol=1e-5)
    assert not any(m.training for m in scripted.modules())

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
    save_bundle(dl, tmp_path / "plain", [64, 64])
    save_bundle(dl, tmp_path / "tuned", [64, 64], classification_threshold=0.3, heatmap_threshold=0.45)
    lsnet = load_bundle(save_bundle(ls, tmp_path / "ls", [64, 64]))
    plain = Analyzer(load_bundle(tmp_path / "plain"), lsnet)
    assert (plain.settings.classification_threshold, plain.settings.heatmap_threshold) == (
        CLASSIFICATION_THRESHOLD, HEATMAP_THRESHOLD)
    tuned_net = load_bundle(tmp_path / "tuned")
    tuned = Analyzer(tuned_net, lsnet)
    assert (tuned.settings.classification_threshold, tuned.settings.heatmap_threshold) == (0.3, 0.45)
    explicit = Analyzer(tuned_net, lsnet, settings=AnalysisSettings(heatmap_threshold=0.9))
    assert (explicit.settings.classification_threshold, explicit.settings.heatmap_threshold) == (0.3, 0.9)
    with pytest.raises(ValueError, match="heatmap_threshold"):
        AnalysisSettings(heatmap_threshold=1.5).resolved()


def test_named_operating_point_of_the_bundle(tmp_path):
    from pneumonitor.inference.analyzer import AnalysisSettings

    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    lsnet = load_bundle(save_bundle(LSNet(width=0.125), tmp_path / "ls", [64, 64]))
    save_bundle(dl, tmp_path / "dl", [64, 64], classification_threshold=0.4,
                operating_points={"balanced": 0.4, "high-specificity": 0.68})
    dlnet = load_bundle(tmp_path / "dl")
    assert dlnet.settings["operating_points"] == {"balanced": 0.4, "high-specificity": 0.68}
    assert Analyzer(dlnet, lsnet).settings.classification_threshold == 0.4  # the default stays the default
    strict = Analyzer(dlnet, lsnet, settings=AnalysisSettings(operating_point="high-specificity"))
    assert strict.settings.classification_threshold == 0.68
    assert strict.describe()["operating_point"] == "high-specificity"  # results.json says which
    with pytest.raises(ValueError, match="'screening' is not one of the DLNet bundle's: balanced, high-specificity"):
        Analyzer(dlnet, lsnet, settings=AnalysisSettings(operating_point="screening"))
    with pytest.raises(ValueError, match="not both"):
        Analyzer(dlnet, lsnet, settings=AnalysisSettings(operating_point="balanced", classification_threshold=0.5))
    save_bundle(dl, tmp_path / "unnamed", [64, 64], classification_threshold=0.4)
    with pytest.raises(ValueError, match="names none"):
        Analyzer(load_bundle(tmp_path / "unnamed"), lsnet, settings=AnalysisSettings(operating_point="balanced"))


def test_half_precision_bundle_loads_and_predicts_the_same(tmp_path):
    """The shipped DLNet's layout: a plain state dict (what the bundle's CheckpointSaver writes) in fp16."""
    from pneumonitor.networks import save_half_precision

    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16)).eval()
    full = save_bundle(dl, tmp_path / "full", [64, 64]) / "models" / "model.pt"
    half = save_bundle(dl, tmp_path / "half", [64, 64]) / "models" / "model.pt"
    save_half_precision(full, half)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)
    assert {v.dtype for v in stored.values()} == {torch.float16, torch.int64}  # BatchNorm counters stay integers
    loaded = load_bundle(tmp_path / "half").network
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (p_full, m_full), (p_half, m_half) = dl(x), loaded(x)
    assert torch.allclose(torch.sigmoid(p_full), torch.sigmoid(p_half), atol=2e-3)
    assert torch.allclose(m_full, m_half, atol=2e-2 * float(m_full.abs().max()) + 1e-6)
