"""DLNet ensembles (``pneumonitor.networks.ensemble``, ``combine_dlnet_bundles``, ``pneumonitor ensemble-dlnet``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pneumonitor.cli import main
from pneumonitor.networks import DLNet, DLNetEnsemble, LSNet, combine_dlnet_bundles, load_bundle, save_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dlnet(seed: int, extent_head: bool = False) -> DLNet:
    torch.manual_seed(seed)
    network = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16),
                    localization_activation="sigmoid", extent_head=extent_head)
    if extent_head:  # a "fitted" head: any fixed weights
        torch.nn.init.normal_(network.extent_head.conv.weight, std=0.05)
    return network.eval()


def test_probabilities_are_averaged_and_the_localization_member_gives_maps_and_read_out():
    small, large = _dlnet(0, extent_head=True), _dlnet(1)
    ensemble = DLNetEnsemble([small, large], [[64, 64], [128, 128]], member_weights=[1, 3]).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.inference_mode():
        logits, maps = ensemble(x)
        _, _, read_out = ensemble.outputs(x)
        small_logits, small_maps, small_read_out = small.outputs(F.interpolate(x, size=[64, 64], mode="area"))
        large_logits, _ = large(x)
    expected = 0.25 * torch.sigmoid(small_logits) + 0.75 * torch.sigmoid(large_logits)
    torch.testing.assert_close(torch.sigmoid(logits), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps, small_maps)
    torch.testing.assert_close(read_out, small_read_out)
    assert ensemble.read_out_channels == 1
    # the other member as localization member: its maps (at its own resolution), no read-out
    other = DLNetEnsemble([small, large], [[64, 64], [128, 128]], localization_member=1).eval()
    with torch.inference_mode():
        assert other(x)[1].shape == (2, 8, 16, 16) and other.outputs(x)[2] is None
    assert other.read_out_channels == 0


def test_torchscript_export_answers_like_the_eager_ensemble():
    from pneumonitor.inference.analyzer import _read_out_channels

    ensemble = DLNetEnsemble([_dlnet(0, extent_head=True), _dlnet(1)], [[64, 64], [128, 128]]).eval()
    scripted = torch.jit.script(ensemble)
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        for eager, script in zip(ensemble.outputs(x), scripted.outputs(x)):
            torch.testing.assert_close(script, eager)
    assert _read_out_channels(scripted) == _read_out_channels(ensemble) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"input_sizes": [[64, 64]]}, "input sizes"),
    ({"input_sizes": [[64, 64], [64, 64]], "member_weights": [1, -1]}, "member_weights"),
    ({"input_sizes": [[64, 64], [64, 64]], "localization_member": 2}, "not a member"),
])
def test_bad_ensembles_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DLNetEnsemble([_dlnet(0), _dlnet(1)], **kwargs)
    with pytest.raises(ValueError, match="at least two"):
        DLNetEnsemble([_dlnet(0)], [[64, 64]])


@pytest.fixture()
def member_bundles(tmp_path: Path) -> tuple[Path, Path]:
    first = save_bundle(_dlnet(0, extent_head=True), tmp_path / "small", [64, 64], classification_threshold=0.3,
                        heatmap_threshold=0.5, severity_rule="extent-head")
    second = save_bundle(_dlnet(1), tmp_path / "large", [128, 128], classification_threshold=0.6)
    state = torch.load(second / "models" / "model.pt", weights_only=True)  # fp16, as the shipped DLNet
    torch.save({k: v.half() if torch.is_floating_point(v) else v for k, v in state.items()},
               second / "models" / "model.pt")
    return first, second


def test_combined_bundle_loads_as_a_dlnet_and_the_analyzer_runs_it(member_bundles, tmp_path: Path):
    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
    from pneumonitor.networks import LoadedNetwork
    from pneumonitor.reading import Radiograph

    out = tmp_path / "ensemble"
    assert main(["ensemble-dlnet", *map(str, member_bundles), "--out", str(out)]) == 0
    config = json.loads((out / "configs" / "inference.json").read_text())
    assert config["image_size"] == [128, 128] and config["network_def"]["input_sizes"] == [[64, 64], [128, 128]]
    assert config["severity_rule"] == "extent-head" and config["classification_threshold"] == 0.3  # member 0's
    assert [(m["bundle"], m["image_size"]) for m in config["ensemble_members"]] == [("small", [64, 64]), ("large", [128, 128])]
    loaded = load_bundle(out, kind="DLNet")
    assert isinstance(loaded.network, DLNetEnsemble) and loaded.image_size == (128, 128)
    members = [load_bundle(b, kind="DLNet").network for b in member_bundles]
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        expected = (torch.sigmoid(members[0](F.interpolate(x, size=[64, 64], mode="area"))[0])
                    + torch.sigmoid(members[1](x)[0])) / 2
        torch.testing.assert_close(torch.sigmoid(loaded.network(x)[0]), expected, atol=1e-5, rtol=0)
    lsnet = LoadedNetwork(network=LSNet(width=0.125).eval(), image_size=(64, 64), source=tmp_path, sha256="",
                          settings={})
    analyzer = Analyzer(loaded, lsnet, AnalysisSettings(qc="off"))
    assert analyzer.extent_rule
    rng = np.random.default_rng(0)
    radiograph = Radiograph(pixels=rng.random((150, 130)).astype(np.float32), source=Path("synthetic.png"))
    probabilities, heatmaps, read_outs = analyzer.run_dlnet(analyzer.dlnet_input(radiograph)[None])
    assert heatmaps.shape == (1, 128, 128) and read_outs.shape == (1, 1, 4, 4) and 0 <= probabilities[0] <= 1


def test_a_localization_member_of_weight_zero_gives_maps_and_head_but_no_probability(member_bundles, tmp_path: Path):
    """The shipped 0.6.0 layout (``ensemble-dlnet --weights 0,1,1``): the 224-px member's heatmap and extent head,
    the probability of the others alone."""
    out = tmp_path / "ensemble"
    assert main(["ensemble-dlnet", *map(str, member_bundles), "--weights", "0,1", "--out", str(out)]) == 0
    loaded = load_bundle(out, kind="DLNet").network
    small, large = (load_bundle(b, kind="DLNet").network for b in member_bundles)
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        logits, maps, read_out = loaded.outputs(x)
        _, small_maps, small_read_out = small.outputs(F.interpolate(x, size=[64, 64], mode="area"))
        torch.testing.assert_close(torch.sigmoid(logits), torch.sigmoid(large(x)[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps, small_maps)
    torch.testing.assert_close(read_out, small_read_out)


def test_combining_refuses_what_is_not_two_single_dlnets(member_bundles, tmp_path: Path):
    first, second = member_bundles
    lsnet = save_bundle(LSNet(width=0.125), tmp_path / "lsnet", [64, 64])
    assert main(["ensemble-dlnet", str(first), "--out", str(tmp_path / "one")]) == 2
    assert main(["ensemble-dlnet", str(first), str(lsnet), "--out", str(tmp_path / "mixed")]) == 2
    assert main(["ensemble-dlnet", str(first), str(tmp_path / "missing"), "--out", str(tmp_path / "gone")]) == 2
    assert not any((tmp_path / name).exists() for name in ("one", "mixed", "gone"))
    combine_dlnet_bundles([first, second], tmp_path / "ens")
    with pytest.raises(ValueError, match="not a single DLNet"):
        combine_dlnet_bundles([tmp_path / "ens", second], tmp_path / "nested")


def test_fit_extent_head_refuses_an_ensemble(member_bundles, tmp_path: Path, capsys):
    out = tmp_path / "ensemble"
    combine_dlnet_bundles(list(member_bundles), out)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [], "validation": []}))
    lsnet = save_bundle(LSNet(width=0.125), tmp_path / "lsnet", [64, 64])
    assert main(["fit-extent-head", "--datalist", str(datalist), "--dlnet", str(out), "--lsnet", str(lsnet),
                 "--quiet"]) == 2
    assert "ensemble" in capsys.readouterr().err
    # the engine itself refuses, before its per-image guard could skip every image and fit nothing
    from pneumonitor.engines.extent_head import collect_examples
    from pneumonitor.inference.analyzer import Analyzer

    analyzer = Analyzer(load_bundle(out), load_bundle(lsnet))
    with pytest.raises(ValueError, match="ensemble of DLNets.*ensemble-dlnet"):
        collect_examples(analyzer, [{"image": "any.png", "severity": 2.0}])


def test_grad_cam_runs_on_an_ensembles_localization_member(member_bundles, tmp_path: Path):
    from pneumonitor.networks.bundle import single_dlnet
    from pneumonitor.stage2.gradcam import GradCAMProposer

    combine_dlnet_bundles(list(member_bundles), tmp_path / "ensemble")
    loaded = load_bundle(tmp_path / "ensemble", kind="DLNet")
    member = single_dlnet(loaded)
    assert member.network is loaded.network.members[0] and member.image_size == (64, 64)
    with pytest.raises(ValueError, match="no module"):
        GradCAMProposer(loaded.network)  # the ensemble itself has no single localization head
    GradCAMProposer(member.network)
    single = load_bundle(member_bundles[1], kind="DLNet")
    assert single_dlnet(single) is single


def test_serving_trained_weights_into_an_ensemble_bundle_replaces_the_ensemble(member_bundles, tmp_path: Path):
    """A MONAI Label promotion serves the one network it trained into the (ensemble) bundle it was trained from."""
    from pneumonitor.networks import serve_trained_weights

    out = tmp_path / "ensemble"
    combine_dlnet_bundles(list(member_bundles), out)
    trained = _dlnet(2)
    weights = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), weights)
    run_config = tmp_path / "train.json"
    run_config.write_text(json.dumps({"image_size": [64, 64], "network_def": {
        "_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "fpn_channels": 16, "localization_maps": 8,
        "dense_units": [32, 16], "localization_activation": "sigmoid"}}))
    from pneumonitor.networks.bundle import update_inference_config

    update_inference_config(out, operating_points={"balanced": 0.4, "high-specificity": 0.7})
    serve_trained_weights(weights, [run_config], out)
    config = json.loads((out / "configs" / "inference.json").read_text())
    assert "ensemble_members" not in config and config["severity_rule"] == "heatmap-threshold"
    assert "operating_points" not in config  # chosen for the ensemble, not for the network that replaced it
    loaded = load_bundle(out, kind="DLNet")
    assert isinstance(loaded.network, DLNet) and loaded.image_size == (64, 64)


def test_training_starts_from_the_member_of_its_architecture(member_bundles, tmp_path: Path):
    """starting_weights: a fine-tune of a served ensemble starts from the member whose parameters are the run's
    (here the two members differ only by the extent head); a single network's weights are used as they are."""
    from pneumonitor.networks.bundle import starting_weights

    out = tmp_path / "ensemble"
    combine_dlnet_bundles(list(member_bundles), out)
    base = {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "fpn_channels": 16,
            "localization_maps": 8, "dense_units": [32, 16], "localization_activation": "sigmoid"}
    for index, extent_head in ((0, True), (1, False)):
        run_config = tmp_path / f"train{index}.json"
        run_config.write_text(json.dumps({"image_size": [64, 64], "network_def": {**base, "extent_head": extent_head}}))
        path = starting_weights(out, [run_config], tmp_path / "start" / f"{index}.pt")
        assert path == tmp_path / "start" / f"{index}.pt"
        network = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16),
                        localization_activation="sigmoid", extent_head=extent_head)
        network.load_state_dict(torch.load(path, weights_only=True))  # strict
        expected = torch.load(member_bundles[index] / "models" / "model.pt", weights_only=True)
        for name, value in network.state_dict().items():
            torch.testing.assert_close(value, expected[name].to(value.dtype))
    assert starting_weights(member_bundles[1], [run_config], tmp_path / "unused.pt") == (
        member_bundles[1] / "models" / "model.pt")  # a single network: its own file
    assert not (tmp_path / "unused.pt").exists()
    run_config.write_text(json.dumps({"image_size": [64, 64], "network_def": {**base, "backbone": "resnet34"}}))
    with pytest.raises(ValueError, match="0: resnet18, 1: resnet18"):
        starting_weights(out, [run_config], tmp_path / "none.pt")
    assert not (tmp_path / "none.pt").exists()


def test_mc_dropout_of_an_ensemble_runs_the_backbones_once_and_matches_whole_passes():
    from pneumonitor.inference.analyzer import Analyzer
    from pneumonitor.networks import LoadedNetwork

    ensemble = DLNetEnsemble([_dlnet(0), _dlnet(1)], [[64, 64], [128, 128]], member_weights=[1, 3]).eval()
    analyzer = Analyzer(LoadedNetwork(ensemble, (128, 128), Path("ensemble"), "", {}), None)
    x = torch.rand(2, 3, 128, 128)
    calls = []
    hook = ensemble.members[1].backbone.layer4.register_forward_hook(lambda *args: calls.append(1))
    probabilities = analyzer.mc_dropout(x, samples=6, seed=0)
    hook.remove()
    assert probabilities.shape == (6, 2) and np.var(probabilities[:, 0]) > 0 and len(calls) == 1
    # the same dropout masks through whole passes of the ensemble (its heads in member order, as above)
    torch.manual_seed(0)
    for member in ensemble.members:
        for module in member.classification_head.modules():
            module.train(isinstance(module, torch.nn.Dropout))
    with torch.no_grad():
        whole = torch.stack([torch.sigmoid(ensemble(x)[0][:, 0]) for _ in range(6)]).numpy()
    ensemble.eval()
    np.testing.assert_allclose(probabilities, whole, atol=1e-5)


def test_a_training_config_starts_from_init_weights(member_bundles, tmp_path: Path):
    """train.json's init_weights: a bundle folder (of an ensemble: the member of the run's architecture) or a state
    dict file, loaded strictly into the run's network; empty: the fresh initialisation."""
    from monai.bundle import ConfigParser

    from pneumonitor.networks import WeightsNotFound
    from pneumonitor.networks.bundle import load_initial_weights

    out = tmp_path / "ensemble"
    combine_dlnet_bundles(list(member_bundles), out)
    root = Path(__file__).resolve().parents[1] / "bundles" / "dlnet" / "configs"

    def network(init_weights: str) -> torch.nn.Module:
        parser = ConfigParser()
        parser.read_config([str(root / "train.json")])
        parser["network_def"] = {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "fpn_channels": 16,
                                 "localization_maps": 8, "dense_units": [32, 16],
                                 "localization_activation": "sigmoid", "extent_head": True}
        parser["device"] = "$torch.device('cpu')"
        parser["init_weights"] = init_weights
        return parser.get_parsed_content("network")

    expected = torch.load(member_bundles[0] / "models" / "model.pt", weights_only=True)  # member 0 has the head
    for source in (str(out), str(member_bundles[0] / "models" / "model.pt")):
        for name, value in network(source).state_dict().items():
            torch.testing.assert_close(value, expected[name].to(value.dtype))
    fresh = network("").state_dict()
    assert not torch.equal(fresh["backbone.conv1.weight"], expected["backbone.conv1.weight"])
    with pytest.raises(WeightsNotFound, match="neither a bundle folder nor a weights file"):
        load_initial_weights(_dlnet(0), tmp_path / "nowhere")
    with pytest.raises(ValueError, match="do not fit"):
        load_initial_weights(_dlnet(0, extent_head=True), member_bundles[1] / "models" / "model.pt")  # no head there


def test_an_ensemble_splits_back_into_its_members(member_bundles, tmp_path: Path, capsys):
    """ensemble-dlnet --member: each member as a bundle of its own, which combines back into the same ensemble."""
    from pneumonitor.networks.bundle import split_dlnet_ensemble, update_inference_config

    out = tmp_path / "ensemble"
    combine_dlnet_bundles(list(member_bundles), out)
    update_inference_config(out, classification_threshold=0.4, operating_points={"balanced": 0.4})
    assert main(["ensemble-dlnet", str(out), "--member", "1", "--out", str(tmp_path / "m1")]) == 0
    split_dlnet_ensemble(out, 0, tmp_path / "m0")
    for index in (0, 1):
        config = json.loads((tmp_path / f"m{index}" / "configs" / "inference.json").read_text())
        original = json.loads((member_bundles[index] / "configs" / "inference.json").read_text())
        assert config["network_def"] == original["network_def"] and config["image_size"] == original["image_size"]
        assert not {"ensemble_members", "operating_points", "classification_threshold"} & set(config)
        # the localization member keeps the ensemble's (its own) extent-head rule; the other the paper's
        assert config["severity_rule"] == ("extent-head" if index == 0 else "heatmap-threshold")
        single, stored = load_bundle(tmp_path / f"m{index}", kind="DLNet"), torch.load(
            member_bundles[index] / "models" / "model.pt", weights_only=True)
        for name, value in single.network.state_dict().items():
            torch.testing.assert_close(value, stored[name].to(value.dtype))
    update_inference_config(tmp_path / "m0", operating_points={"balanced": 0.3, "high-specificity": 0.8})
    again = combine_dlnet_bundles([tmp_path / "m0", tmp_path / "m1"], tmp_path / "again")
    assert "operating_points" not in json.loads(again.read_text())  # the member's points are not the ensemble's
    first = torch.load(out / "models" / "model.pt", weights_only=True)
    second = torch.load(again.parent.parent / "models" / "model.pt", weights_only=True)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # refusals: a single DLNet, a member that is not there, several bundles
    with pytest.raises(ValueError, match="not a DLNet ensemble"):
        split_dlnet_ensemble(member_bundles[0], 0, tmp_path / "x")
    assert main(["ensemble-dlnet", str(out), "--member", "2", "--out", str(tmp_path / "x")]) == 2
    assert "no member 2" in capsys.readouterr().err
    assert main(["ensemble-dlnet", str(out), str(out), "--member", "0", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_high_resolution_cpu_stage_continues_the_224_px_run(tmp_path: Path):
    """train_cpu_hires.json: the CPU recipe at 320 px, starting from the 224-px run's best checkpoint copied into its
    models/ as model_224.pt (scripts/train_default_models.sh); without that file the run refuses to start from a fresh
    initialisation at its small learning rate. Serving its weights records 320 px and the ResNet-18."""
    from monai.bundle import ConfigParser

    from pneumonitor.networks import WeightsNotFound, serve_trained_weights

    configs = Path(__file__).resolve().parents[1] / "bundles" / "dlnet" / "configs"
    recipe = [configs / "train.json", configs / "train_cpu.json", configs / "train_cpu_hires.json"]
    def run_config() -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(f) for f in recipe])
        parser["bundle_root"] = str(tmp_path / "run")
        parser["device"] = "$torch.device('cpu')"
        return parser

    parser = run_config()
    assert parser.get_parsed_content("image_size") == [320, 320]
    assert parser.get_parsed_content("learning_rate") < ConfigParser.load_config_files([str(recipe[0])])["learning_rate"]
    (tmp_path / "run" / "models").mkdir(parents=True)
    with pytest.raises(RuntimeError) as refused:  # MONAI's config parser wraps what the expression raised
        parser.get_parsed_content("network")
    assert isinstance(refused.value.__cause__, WeightsNotFound) and "model_224.pt" in str(refused.value.__cause__)
    first_stage = DLNet("resnet18", localization_activation="sigmoid", extent_head=True)
    torch.save(first_stage.state_dict(), tmp_path / "run" / "models" / "model_224.pt")
    started = run_config().get_parsed_content("network").state_dict()
    for name, value in first_stage.state_dict().items():
        torch.testing.assert_close(started[name], value)
    served = tmp_path / "served"
    shutil.copytree(configs, served / "configs")
    config = json.loads(serve_trained_weights(tmp_path / "run" / "models" / "model_224.pt", recipe, served).read_text())
    assert config["image_size"] == [320, 320] and config["network_def"]["backbone"] == "resnet18"
