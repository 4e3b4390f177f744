"""DLNet's extent head: the fit (pneumonitor.engines.extent_head), its bundle, and the Analyzer that uses it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pneumonitor.engines.extent_head import (
    ExtentExample,
    choose_and_fit,
    fit_ridge,
    lung_cell_weights,
    predicted_scores,
    write_extent_head,
)
from pneumonitor.networks import DLNet, LSNet, load_bundle, save_bundle
from pneumonitor.severity import lung_extents

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size,grid", [((100, 120), (14, 14)), ((37, 61), (4, 5)), ((224, 224), (14, 14))])
def test_lung_cell_weights_give_the_mean_of_the_nearest_resized_map_over_the_lung(size, grid):
    rng = np.random.default_rng(1)
    lung = rng.random(size) < 0.3
    cell_map = rng.normal(size=grid).astype(np.float32)
    full = F.interpolate(torch.from_numpy(cell_map)[None, None], size=size, mode="nearest")[0, 0].numpy()
    weights = lung_cell_weights(lung, grid)
    assert weights.sum() == lung.sum()
    assert (cell_map * weights).sum() / weights.sum() == pytest.approx(float(full[lung].mean()), abs=1e-5)


def _examples(rng, n, weight, bias, per_lung=False):
    examples = []
    for i in range(n):
        features = rng.normal(size=(2, weight.size)) * 3 + 5
        right, left = features @ weight + bias
        examples.append(ExtentExample(f"image{i}", features, 0.9, total=right + left,
                                      right=right if per_lung else math.nan, left=left if per_lung else math.nan))
    return examples


def test_ridge_recovers_a_linear_extent_from_totals_alone_and_with_per_lung_scores():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=6) * 0.1, 1.5
    totals_only = _examples(rng, 80, weight, bias)
    fitted_weight, fitted_bias = fit_ridge(totals_only, alpha=1e-6)
    # the total pins w and 2b: each lung's extent comes out right although no lung was ever scored alone
    np.testing.assert_allclose(fitted_weight, weight, atol=1e-6)
    assert fitted_bias == pytest.approx(bias, abs=1e-5)
    mixed = _examples(rng, 40, weight, bias) + _examples(rng, 10, weight, bias, per_lung=True)
    np.testing.assert_allclose(fit_ridge(mixed, alpha=1e-6)[0], weight, atol=1e-6)
    # a strong penalty shrinks the weights towards 0 (the mean), never the intercept
    shrunk, shrunk_bias = fit_ridge(totals_only, alpha=1e6)
    assert np.abs(shrunk).max() < 1e-3 * np.abs(weight).max()
    mean_total = np.mean([e.total for e in totals_only])
    assert 2 * (shrunk_bias + shrunk @ np.mean([e.features.mean(0) for e in totals_only], axis=0)) == pytest.approx(
        mean_total, abs=0.05)
    with pytest.raises(ValueError, match="no expert-scored"):
        fit_ridge([ExtentExample("x", np.ones((2, 6)), 0.9)], alpha=1.0)


def test_predicted_scores_follow_the_severity_pipeline_and_alpha_is_chosen_on_validation():
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=5) * 0.2, 1.0
    training, validation = _examples(rng, 60, weight, bias), _examples(rng, 30, weight, bias)
    validation[0].probability = 0.1  # below the threshold: scored 0 whatever the features
    scores = predicted_scores(validation, weight, bias, classification_threshold=0.5)
    extents = np.clip(np.stack([e.features @ weight + bias for e in validation[1:]]), 0, 4)
    expected = np.where(extents <= 0.5, 0, np.floor(extents + 0.5)).sum(axis=1)  # rounded halves up, per lung
    assert scores[0] == 0 and np.array_equal(scores[1:], expected)
    fit = choose_and_fit(training, validation, 0.5, alphas=(1e-6, 1e6))
    assert fit.alpha == 1e-6 and [row["alpha"] for row in fit.table] == [1e-6, 1e6]
    assert fit.table[0]["mae"] < fit.table[1]["mae"] and fit.n_training == 60 and fit.n_validation == 30
    assert fit.record()["classification_threshold"] == 0.5
    # gate 0: the head alone, the image below 0.5 is scored by its features like the others
    alone = choose_and_fit(training, validation, 0.0, alphas=(1e-6,))
    assert alone.table[0]["mae"] != fit.table[0]["mae"] and alone.record()["classification_threshold"] == 0.0
    assert np.array_equal(predicted_scores(validation, weight, bias, 0.0)[1:], expected)
    with pytest.raises(ValueError, match="validation"):
        choose_and_fit(training, [], 0.5)


def _tiny_dlnet_bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    network = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16),
                    localization_activation="sigmoid")
    save_bundle(network, folder, (64, 64), classification_threshold=0.0, heatmap_threshold=0.5)
    state = torch.load(folder / "models" / "model.pt", weights_only=True)
    torch.save({k: v.half() if torch.is_floating_point(v) else v for k, v in state.items()},
               folder / "models" / "model.pt")  # stored in fp16, as the shipped DLNet
    return folder


def test_written_head_is_what_the_analyzer_uses_and_means_the_fitted_extent_over_each_lung(tmp_path):
    from pneumonitor.engines.extent_head import ExtentFit
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, _resize
    from pneumonitor.networks import LoadedNetwork

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    rng = np.random.default_rng(3)
    fit = ExtentFit(weight=rng.normal(size=256) * 0.05, bias=2.0, alpha=10.0, table=[{"alpha": 10.0}])
    written = write_extent_head(bundle, fit)
    config = json.loads(written.read_text())
    assert config["severity_rule"] == "extent-head" and config["network_def"]["extent_head"] is True
    assert config["extent_head_fit"]["alpha"] == 10.0
    loaded = load_bundle(bundle, kind="DLNet")
    assert loaded.settings["severity_rule"] == "extent-head"
    assert loaded.network.extent_head.conv.weight.shape == (1, 256, 1, 1)
    lsnet = LoadedNetwork(network=LSNet(width=0.125), image_size=(64, 64), source=tmp_path, sha256="", settings={})
    analyzer = Analyzer(loaded, lsnet, AnalysisSettings(qc="off", uncertainty="flip"))
    assert analyzer.extent_rule
    image = torch.rand(1, 3, 64, 64)
    probabilities, heatmaps, extents = analyzer.run_dlnet(image)
    assert extents.shape == (1, 1, 4, 4)  # the extent channel only (no lung classifier)
    # the extent map's mean over a lung = the head applied to the lung-pooled stride-16 features (what was fitted)
    lungs = np.zeros((90, 110), np.float32)
    lungs[10:80, 8:50], lungs[15:85, 62:104] = 1.0, 1.0
    with torch.inference_mode():
        c16 = loaded.network.stage_outputs(image)[1][0].numpy()
    extent_full = _resize(extents[0, 0], lungs.shape, mode="nearest")
    right = np.zeros(lungs.shape, bool)
    right[10:80, 8:50] = True
    left = np.zeros(lungs.shape, bool)
    left[15:85, 62:104] = True
    for lung, extent in zip((right, left), lung_extents(extent_full, right, left)):
        weights = lung_cell_weights(lung, c16.shape[1:])
        pooled = (c16 * weights).sum(axis=(1, 2)) / weights.sum()
        head = loaded.network.extent_head.conv
        assert extent == pytest.approx(float(pooled @ head.weight.detach().numpy().ravel() + head.bias.item()),
                                       abs=1e-4)
    analysis = analyzer.postprocess(_radiograph(lungs.shape), float(probabilities[0]), heatmaps[0], lungs,
                                    read_out=extents[0])
    assert analysis.status == "ok"
    from pneumonitor.severity import extent_ratio
    expected = [extent_ratio(e) for e in lung_extents(extent_full, analysis.severity.right_lung,
                                                      analysis.severity.left_lung)]
    assert [analysis.severity.ratio_right, analysis.severity.ratio_left] == pytest.approx(expected, abs=0.05)


def _radiograph(shape):
    from pneumonitor.reading import Radiograph

    return Radiograph(pixels=np.zeros(shape, np.float32), source=Path("synthetic.png"))


def test_a_dlnet_without_a_head_cannot_serve_the_extent_rule(tmp_path):
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer

    loaded = load_bundle(_tiny_dlnet_bundle(tmp_path / "dlnet"), kind="DLNet")
    with pytest.raises(ValueError, match="fit-extent-head"):
        Analyzer(loaded, None, AnalysisSettings(severity_rule="extent-head"))
    with pytest.raises(ValueError, match="severity_rule"):
        Analyzer(loaded, None, AnalysisSettings(severity_rule="area"))
    assert not Analyzer(loaded, None).extent_rule  # the paper's rule by default


def test_fit_extent_head_command_fits_on_training_chooses_on_validation_and_writes_the_bundle(shared_data, tmp_path):
    """The command on real radiographs through the shipped networks (scores invented: this checks the plumbing; the
    fit's quality is measured in the DLNet card)."""
    import shutil

    from pneumonitor.cli import main
    from pneumonitor.inference.analyzer import Analyzer, AnalysisSettings
    from pneumonitor.reading import read_radiograph

    shipped = ROOT / "bundles" / "dlnet"
    if not (shipped / "models" / "model.pt").is_file():
        pytest.skip("no shipped DLNet weights")
    bundle = tmp_path / "dlnet"
    shutil.copytree(shipped, bundle)
    # the shipped DLNet is an ensemble: its head belongs to its localization member, refitted in that member's own
    # bundle (ensemble-dlnet then combines again); written here as a bundle of its own
    from pneumonitor.networks import save_bundle
    from pneumonitor.networks.bundle import single_dlnet

    member = single_dlnet(load_bundle(shipped, kind="DLNet"))
    settings = {k: member.settings[k] for k in ("classification_threshold", "heatmap_threshold", "severity_rule")}
    save_bundle(member.network, bundle, member.image_size, **settings)
    images = sorted((shared_data / "covid-chestxray-dataset" / "images").glob("*.png"))[:7]
    items = [{"image": str(p), "label": 1, "source": "covid-collection", "severity": float(i % 5 + 2)}
             for i, p in enumerate(images)]
    items[0].update(severity_right=2.0, severity_left=1.0)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": items[:4], "validation": items[4:], "test": []}))
    report = tmp_path / "fit.json"
    assert main(["fit-extent-head", "--datalist", str(datalist), "--dlnet", str(bundle), "--alphas", "10,1000",
                 "--classification-threshold", "0", "--report", str(report), "--quiet"]) == 0
    record = json.loads(report.read_text())
    assert record["classification_threshold"] == 0  # judged without the gate, as asked
    assert record["n_validation"] == 3 and [row["alpha"] for row in record["validation"]] == [10, 1000]
    assert record["alpha"] in (10, 1000) and record["n_training"] <= 8  # 4 images and their mirrors
    analyzer = Analyzer.from_locations(bundle, device="cpu", settings=AnalysisSettings(qc="off", uncertainty="off"))
    assert analyzer.extent_rule
    assert analyzer.analyze_one(read_radiograph(images[0])).status == "ok"
    # a datalist without expert scores is refused with the reason, and the bundle is left as it was
    before = (bundle / "models" / "model.pt").read_bytes()
    datalist.write_text(json.dumps({"training": [{"image": str(images[0]), "label": 1}], "validation": []}))
    assert main(["fit-extent-head", "--datalist", str(datalist), "--dlnet", str(bundle), "--quiet"]) == 2
    assert (bundle / "models" / "model.pt").read_bytes() == before


def test_analyze_refuses_the_extent_rule_for_a_dlnet_without_a_head_and_writes_nothing(dicom_samples, tmp_path):
    from pneumonitor.cli import main

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    out = tmp_path / "out"
    assert main(["analyze", str(dicom_samples[0]), "--dlnet", str(bundle), "--severity-rule", "extent-head",
                 "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_pneumonia_mask_follows_the_severity_rule_inside_given_lungs(tmp_path, dicom_samples):
    """What the Label app's promotion judges DLNet by: its pneumonia inside the annotator's lungs, by the rule it
    serves with."""
    from pneumonitor.engines.extent_head import ExtentFit
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
    from pneumonitor.reading import read_radiograph
    from pneumonitor.severity import pneumonia_region

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    write_extent_head(bundle, ExtentFit(weight=np.zeros(256), bias=2.0, alpha=1.0))  # every lung: extent 2, 37.5 %
    radiograph = read_radiograph(dicom_samples[0])
    lungs = np.zeros(radiograph.shape, bool)
    h, w = radiograph.shape
    lungs[h // 5: 4 * h // 5, w // 10: 4 * w // 10] = True
    lungs[h // 5: 4 * h // 5, 6 * w // 10: 9 * w // 10] = True
    extent = Analyzer(load_bundle(bundle), None, AnalysisSettings(classification_threshold=0.0))
    mask = extent.pneumonia_mask(radiograph, lungs)
    assert not (mask & ~lungs).any() and mask.sum() == pytest.approx(0.375 * lungs.sum(), rel=0.01)
    paper = Analyzer(load_bundle(bundle), None, AnalysisSettings(classification_threshold=0.0, heatmap_threshold=0.5,
                                                                 severity_rule="heatmap-threshold"))
    probability, heatmap = paper.pneumonia(radiograph)
    assert np.array_equal(paper.pneumonia_mask(radiograph, lungs), pneumonia_region(probability, heatmap, lungs, 0.0, 0.5))
    one_lung = lungs.copy()
    one_lung[:, w // 2:] = False  # one lung annotated: the paper's rule for that image
    assert np.array_equal(extent.pneumonia_mask(radiograph, one_lung),
                          pneumonia_region(probability, heatmap, one_lung, 0.0, extent.settings.heatmap_threshold))


def test_lung_classifier_fit_separates_and_its_penalty_is_chosen_on_validation():
    from pneumonitor.engines.extent_head import choose_lung_classifier, fit_lung_classifier

    rng = np.random.default_rng(4)

    def examples(n, source):
        # feature 0 = label + a common nuisance, feature 1 = the nuisance: only a weakly penalised fit learns to
        # subtract it (a strong penalty keeps the mean-difference direction, feature 0 alone)
        out = []
        for i in range(n):
            label = i % 2
            nuisance = rng.normal(scale=3.0, size=2)
            features = rng.normal(scale=0.1, size=(2, 3))
            features[:, 0] += label + nuisance
            features[:, 1] += nuisance
            out.append(ExtentExample(f"{source}{i}", features, 0.5, label=label, source=source))
        return out

    training, validation = examples(200, "a") + examples(40, "b"), examples(100, "a")
    fit = fit_lung_classifier(training, penalty=1e-4)
    logits = fit.logits(validation)
    labels = np.array([e.label for e in validation])
    assert logits[labels == 1].mean() > logits[labels == 0].mean() + 2
    # the logit is linear in the raw features of each lung, as the head's two channels compute it
    e = validation[0]
    assert logits[0] == pytest.approx(float(e.features[0] @ fit.right + e.features[1] @ fit.left + fit.bias))
    chosen = choose_lung_classifier(training, validation, penalties=(1e-4, 100.0))
    assert [row["penalty"] for row in chosen.table] == [1e-4, 100.0] and chosen.penalty == 1e-4
    assert chosen.table[0]["auc"] > 0.9
    with pytest.raises(ValueError, match="both labels"):
        fit_lung_classifier([x for x in training if x.label == 1], penalty=1.0)


def test_lung_classifier_gives_the_probability_analyze_reports(tmp_path):
    from pneumonitor.engines.extent_head import ExtentFit, LungClassifierFit
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, _resize
    from pneumonitor.networks import LoadedNetwork

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    rng = np.random.default_rng(5)
    classifier = LungClassifierFit(right=rng.normal(size=256) * 0.05, left=rng.normal(size=256) * 0.05, bias=0.3,
                                   penalty=0.01)
    config = json.loads(write_extent_head(bundle, ExtentFit(np.zeros(256), 1.0, 1.0), classifier).read_text())
    assert config["probability_source"] == "lung-classifier" and config["network_def"]["lung_classifier"] is True
    loaded = load_bundle(bundle, kind="DLNet")
    lsnet = LoadedNetwork(network=LSNet(width=0.125), image_size=(64, 64), source=tmp_path, sha256="", settings={})
    analyzer = Analyzer(loaded, lsnet, AnalysisSettings(qc="off", uncertainty="off", classification_threshold=0.5))
    assert analyzer.lung_classifier
    image = torch.rand(1, 3, 64, 64)
    probabilities, heatmaps, maps = analyzer.run_dlnet(image)
    assert maps.shape == (1, 3, 4, 4)
    lungs = np.zeros((90, 110), np.float32)
    lungs[10:80, 8:50], lungs[15:85, 62:104] = 1.0, 1.0
    analysis = analyzer.postprocess(_radiograph(lungs.shape), float(probabilities[0]), heatmaps[0], lungs,
                                    read_out=maps[0])
    with torch.inference_mode():
        c16 = loaded.network.stage_outputs(image)[1][0].numpy()
    pooled = [(c16 * lung_cell_weights(lung, c16.shape[1:])).sum(axis=(1, 2)) / lung_cell_weights(
        lung, c16.shape[1:]).sum() for lung in (analysis.severity.right_lung, analysis.severity.left_lung)]
    logit = pooled[0] @ classifier.right + pooled[1] @ classifier.left + classifier.bias
    assert analysis.severity.probability == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-3)  # fp16 weights
    assert analysis.severity.probability != pytest.approx(float(probabilities[0]), abs=1e-3)
    # the classification head stays available: the same bundle with the paper's probability
    head = Analyzer(loaded, lsnet, AnalysisSettings(qc="off", probability_source="classification-head"))
    assert not head.lung_classifier


def test_lung_classifier_needs_its_channels(tmp_path):
    from pneumonitor.engines.extent_head import ExtentFit
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    write_extent_head(bundle, ExtentFit(np.zeros(256), 1.0, 1.0))  # the extent channel only
    with pytest.raises(ValueError, match="lung-classifier"):
        Analyzer(load_bundle(bundle), None, AnalysisSettings(probability_source="lung-classifier"))
    with pytest.raises(ValueError, match="extent_head"):
        DLNet("resnet18", lung_classifier=True)


def test_mirrored_examples_swap_the_lungs_and_their_scores(tmp_path, dicom_samples):
    """A mirrored radiograph's image-left lung is the patient's left lung: its features are the original left lung's
    (up to the network's own asymmetry) and the per-lung scores swap."""
    from pneumonitor.engines.extent_head import collect_examples
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
    from pneumonitor.networks import LoadedNetwork

    bundle = _tiny_dlnet_bundle(tmp_path / "dlnet")
    lsnet = LSNet(width=0.125)
    with torch.no_grad():  # every pixel is lung: one component that split_lungs cuts at the mediastinum
        lsnet.head.weight.zero_()
        lsnet.head.bias.fill_(10.0)
    analyzer = Analyzer(load_bundle(bundle), LoadedNetwork(lsnet.eval(), (64, 64), tmp_path, "", {}),
                        AnalysisSettings(qc="off", uncertainty="off"))
    item = {"image": str(dicom_samples[-1]), "severity": 5.0, "severity_right": 3.0, "severity_left": 2.0, "label": 1}
    plain, mirrored = collect_examples(analyzer, [item], mirror=True)
    assert (plain.total, plain.right, plain.left) == (5.0, 3.0, 2.0)
    assert (mirrored.total, mirrored.right, mirrored.left) == (5.0, 2.0, 3.0) and "mirrored" in mirrored.image
    assert not np.allclose(plain.features, mirrored.features)
    assert len(collect_examples(analyzer, [item])) == 1
