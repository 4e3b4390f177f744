import json
from pathlib import Path

import pytest
import torch

from pneumonitor.networks import (
    DLNet,
    DLNetLoss,
    LSNet,
    WeightsNotFound,
    load_bundle,
    maps_to_heatmap,
    save_bundle,
    serve_trained_weights,
)
from pneumonitor.networks.bundle import load_exported, update_inference_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [448, 256])
def test_dlnet_shapes_paper_backbone(size):
    net = DLNet("resnet50").eval()
    with torch.no_grad():
        logits, maps = net(torch.randn(1, 3, size, size))
    assert logits.shape == (1, 1)
    assert maps.shape == (1, 128, size // 8, size // 8)
    assert float(maps.min()) >= 0.0  # ReLU output


def test_dlnet_stage_strides():
    net = DLNet("resnet18").eval()
    c8, c16, c32 = net.stage_outputs(torch.randn(1, 3, 448, 448))
    assert (c8.shape[-1], c16.shape[-1], c32.shape[-1]) == (56, 28, 14)  # Act-56, Act-28, Act-14


def test_heatmap_is_max_over_maps():
    maps = torch.rand(2, 128, 7, 9)
    heatmap = maps_to_heatmap(maps)
    assert torch.equal(heatmap[:, 0], maps.max(dim=1).values)
    resized = maps_to_heatmap(maps, (28, 36))
    assert resized.shape == (2, 1, 28, 36)
    net = DLNet("resnet18").eval()
    x = torch.randn(1, 3, 128, 128)
    probability, heat = net.predict(x)
    _, raw = net(x)
    assert heat.shape == (1, 1, 128, 128) and 0 <= float(probability) <= 1
    assert torch.allclose(heat.max(), raw.max().clamp(max=1.0), rtol=0.05)  # clipped to [0, 1]
    assert float(maps_to_heatmap(maps * 3).max()) == 1.0


@pytest.mark.parametrize("size,width", [(448, 0.25), (256, 1.0)])
def test_lsnet_shapes(size, width):
    net = LSNet(width=width).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, size, size))
    assert out.shape == (1, 1, size, size)


def test_lsnet_has_vgg19_encoder():
    net = LSNet(norm=None)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16
    assert [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8


def test_loss_terms_and_masking():
    loss_fn = DLNetLoss(localization_weight=1e-5, mse_reduction="sum")
    logits = torch.zeros(2, 1)
    maps = torch.ones(2, 128, 8, 8)
    target = torch.zeros(2, 1, 64, 64)
    loss = loss_fn(logits, maps, torch.tensor([1, 0]), target, has_target=torch.tensor([1, 0]))
    # BCE of logit 0 = ln 2; summed MSE per image = 128*8*8 = 8192, only the first image counts
    assert float(loss) == pytest.approx(0.693147 + 1e-5 * 8192, rel=1e-5)
    assert loss_fn.last_terms["mse"] == pytest.approx(8192)
    no_target = loss_fn(logits, maps, torch.tensor([1, 0]))
    assert float(no_target) == pytest.approx(0.693147, rel=1e-5)
    mean = DLNetLoss(localization_weight=1.0, mse_reduction="mean")(logits, maps, torch.tensor([1, 0]), target)
    assert float(mean) == pytest.approx(0.693147 + 1.0, rel=1e-5)


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    net = DLNet("resnet18", dropout=0.0, fpn_channels=32, localization_maps=16)
    x = torch.randn(4, 3, 64, 64)
    label = torch.tensor([1.0, 0.0, 1.0, 0.0])
    target = torch.zeros(4, 1, 64, 64)
    target[0, :, 10:30, 10:30] = 1
    loss_fn = DLNetLoss(localization_weight=1e-3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    before = loss_fn(*net(x), label, target)
    before.backward()
    optimizer.step()
    optimizer.zero_grad()
    after = loss_fn(*net(x), label, target)
    assert float(after) < float(before)


def test_bundle_round_trip_takes_the_architecture_from_network_def(tmp_path):
    dl = DLNet("resnet34", dense_units=(64, 32), fpn_channels=48, localization_maps=24).eval()
    save_bundle(dl, tmp_path / "dl", [224, 192], classification_threshold=0.3)
    loaded = load_bundle(tmp_path / "dl", kind="DLNet")
    assert loaded.image_size == (224, 192) and loaded.network.config["backbone"] == "resnet34"
    assert loaded.settings["classification_threshold"] == 0.3
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded.network(x)[0], dl(x)[0])
    # the config decides: weights of another architecture are refused with the reason, not silently adapted
    config_path = tmp_path / "dl" / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["network_def"]["backbone"] = "resnet18"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not fit the network_def"):
        load_bundle(tmp_path / "dl")
    save_bundle(LSNet(width=0.125, norm="instance"), tmp_path / "ls", 96)
    assert load_bundle(tmp_path / "ls").image_size == (96, 96)  # one number: a square
    with pytest.raises(ValueError, match="holds a LSNet, not DLNet"):
        load_bundle(tmp_path / "ls", kind="DLNet")
    # a bundle folder and nothing else: a bare weights file or a folder without weights
    with pytest.raises(WeightsNotFound, match="not a bundle folder"):
        load_bundle(tmp_path / "dl" / "models" / "model.pt")
    (tmp_path / "ls" / "models" / "model.pt").unlink()
    with pytest.raises(WeightsNotFound, match="no trained weights"):
        load_bundle(tmp_path / "ls")


def test_serving_trained_weights_writes_the_run_network_def_and_image_size(tmp_path):
    """train.json says ResNet-50 @ 448, train_cpu.json ResNet-18 @ 224: the served inference.json follows the run."""
    import shutil

    configs = REPO / "bundles" / "dlnet" / "configs"
    served = tmp_path / "served"
    shutil.copytree(configs, served / "configs")
    run = tmp_path / "run"
    run.mkdir()
    cpu = json.loads((configs / "train_cpu.json").read_text())
    assert cpu["network_def#backbone"] == "resnet18"
    config_files = [configs / "train.json", configs / "train_cpu.json"]
    operating_point = {k: json.loads((configs / "inference.json").read_text())[k]
                       for k in ("classification_threshold", "heatmap_threshold")}
    trained = DLNet("resnet18", localization_activation="sigmoid", extent_head=True)
    torch.save(trained.state_dict(), run / "model.pt")
    # a head fitted to the weights being replaced
    update_inference_config(served, severity_rule="extent-head", probability_source="lung-classifier")
    written = serve_trained_weights(run / "model.pt", config_files, served, half_precision=True)
    config = json.loads(written.read_text())
    # that head does not fit the new weights: the paper's rules until it is fitted again
    assert (config["severity_rule"], config["probability_source"]) == ("heatmap-threshold", "classification-head")
    assert config["network_def"]["backbone"] == "resnet18" and config["image_size"] == cpu["image_size"]
    assert {k: config[k] for k in operating_point} == operating_point  # the rest of inference.json is kept
    loaded = load_bundle(served, kind="DLNet")
    assert loaded.image_size == tuple(cpu["image_size"]) and loaded.network.config["backbone"] == "resnet18"
    # weights that do not fit the run's configs are refused before anything is replaced
    before = (served / "models" / "model.pt").read_bytes(), written.read_text()
    torch.save(DLNet("resnet34").state_dict(), run / "model.pt")
    with pytest.raises(ValueError, match="does not fit"):
        serve_trained_weights(run / "model.pt", config_files, served)
    assert ((served / "models" / "model.pt").read_bytes(), written.read_text()) == before


def test_exported_torchscript_carries_its_inference_config(tmp_path):
    """What the Deploy app loads: ``ckpt_export --config_file configs/inference.json`` of a bundle."""
    from monai.bundle import ckpt_export

    ls = LSNet(width=0.125).eval()
    bundle = save_bundle(ls, tmp_path / "ls", [64, 64], threshold=0.5)
    exported = bundle / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(bundle / "models" / "model.pt"),
                meta_file=str(REPO / "bundles" / "lsnet" / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.json"), use_trace=True, input_shape=[1, 1, 64, 64])
    loaded = load_exported(exported)
    assert loaded.image_size == (64, 64) and loaded.settings["threshold"] == 0.5
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded.network(x), ls(x))
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.trace(ls, x), str(plain))
    with pytest.raises(ValueError, match="carries no inference.json"):
        load_exported(plain)


def test_heatmap_supervision_regresses_the_maximum_the_pipeline_thresholds():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:5, 2:5] = 0.75
    maps = torch.zeros(1, 128, 8, 8)
    maps[:, 7] = target[:, 0]  # one map fits, the others stay below: the maximum is the target
    maps[:, 3] = 0.5 * target[:, 0]
    label = torch.tensor([1])
    heatmap_loss = DLNetLoss(localization_weight=1.0, mse_reduction="mean", supervise="heatmap")
    heatmap_loss(torch.zeros(1, 1), maps, label, target)
    assert heatmap_loss.last_terms["mse"] == pytest.approx(0.0)
    paper_loss = DLNetLoss(localization_weight=1.0, mse_reduction="mean", supervise="maps")
    paper_loss(torch.zeros(1, 1), maps, label, target)
    assert paper_loss.last_terms["mse"] > 0.01  # every map is asked to equal the target
    with pytest.raises(ValueError, match="supervise"):
        DLNetLoss(supervise="mean")


def test_weak_terms_keep_the_heatmap_in_the_lungs_and_at_the_experts_extent():
    from pneumonitor.severity import involvement_from_score

    lung = torch.zeros(2, 1, 8, 8)
    lung[..., :, :4] = 1.0  # the image's left half is lung
    maps = torch.zeros(2, 1, 8, 8)
    maps[0, 0, :, :4] = involvement_from_score(5.0) / 100  # lung coverage = what score 5 implies
    maps[1, 0, :, 4:] = 1.0  # all of it outside the lungs
    loss = DLNetLoss(localization_weight=1.0, mse_reduction="mean", supervise="heatmap",
                     outside_lung_weight=1.0, extent_weight=1.0)
    common = dict(target=torch.zeros(2, 1, 8, 8), has_target=torch.zeros(2), lung=lung, has_lung=torch.ones(2))
    loss(torch.zeros(2, 1), maps[:1].expand(2, -1, -1, -1), torch.ones(2), extent=torch.tensor([5.0, -1.0]),
         **common)
    assert loss.last_terms["outside_lung"] == pytest.approx(0.0)
    assert loss.last_terms["extent"] == pytest.approx(0.0, abs=1e-9)
    loss(torch.zeros(2, 1), maps[1:].expand(2, -1, -1, -1), torch.ones(2), extent=torch.tensor([5.0, -1.0]),
         **common)
    assert loss.last_terms["outside_lung"] == pytest.approx(0.5)  # half the cells, coverage 1
    assert loss.last_terms["extent"] == pytest.approx((involvement_from_score(5.0) / 100) ** 2)
    localized = loss(torch.zeros(2, 1), maps[1:].expand(2, -1, -1, -1), torch.ones(2), extent=torch.tensor([5.0, 5.0]),
                     **{**common, "has_target": torch.ones(2)})  # outlined lesions: the target term alone
    assert loss.last_terms["outside_lung"] == 0.0 and loss.last_terms["extent"] == 0.0
    assert float(localized) > 0.69


def test_sigmoid_localization_head_and_its_bundle_config(tmp_path):
    net = DLNet("resnet18", localization_activation="sigmoid").eval()
    with torch.no_grad():
        _, maps = net(torch.randn(1, 3, 64, 64))
    assert 0.0 < float(maps.min()) and float(maps.max()) < 1.0
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    network_def = {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "localization_activation": "sigmoid"}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def, "image_size": [64, 64]}))
    loaded = load_bundle(tmp_path, kind="DLNet")  # the activation has no weights: only the config can tell it
    assert isinstance(loaded.network.localization_head.output_act, torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="activation"):
        DLNet("resnet18", localization_activation="tanh")


def test_extent_head_is_frozen_and_left_out_of_forward():
    """The extent head is fitted after training: training (forward + backward) neither uses nor changes it, and the
    other layers draw the same initial weights with and without it."""
    torch.manual_seed(0)
    plain = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    torch.manual_seed(0)
    net = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16), extent_head=True)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, net.state_dict()[name]), name
    assert not any(p.requires_grad for p in net.extent_head.parameters())
    logits, maps = net(torch.rand(2, 3, 64, 64))
    (logits.sum() + maps.sum()).backward()
    assert all(p.grad is None for p in net.extent_head.parameters())
    _, _, extent = net.outputs(torch.rand(1, 3, 64, 64))
    assert extent.shape == (1, 1, 4, 4) and plain.outputs(torch.rand(1, 3, 64, 64))[2] is None
