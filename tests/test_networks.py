import pytest
import torch

from pneumonitor.networks import DLNet, DLNetLoss, LSNet, load_network, maps_to_heatmap, save_checkpoint


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


def test_checkpoint_round_trip_and_architecture_inference(tmp_path):
    dl = DLNet("resnet34", dense_units=(64, 32), fpn_channels=48, localization_maps=24)
    save_checkpoint(dl, tmp_path / "dl.pt", [224, 224])
    loaded = load_network(tmp_path / "dl.pt", "DLNet")
    assert loaded.image_size == (224, 224) and loaded.network.config["backbone"] == "resnet34"
    # a plain state dict (e.g. MONAI's CheckpointSaver) is enough: the architecture comes from the shapes
    torch.save(dl.state_dict(), tmp_path / "plain.pt")
    plain = load_network(tmp_path / "plain.pt", "DLNet")
    assert plain.network.config["localization_maps"] == 24 and plain.image_size == (448, 448)
    x = torch.randn(1, 3, 64, 64)
    dl.eval()
    assert torch.allclose(plain.network(x)[0], dl(x)[0])
    ls = LSNet(width=0.125, norm="instance")
    torch.save({"model": ls.state_dict()}, tmp_path / "ls.pt")
    assert load_network(tmp_path / "ls.pt", "LSNet").network.config["norm"] == "instance"
    with pytest.raises(ValueError, match="LSNet"):
        load_network(tmp_path / "dl.pt", "LSNet")


def test_bundle_folder_weights_decide_the_architecture(tmp_path):
    import json

    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    config = {"network_def": {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet50", "dropout": 0.3},
              "image_size": [224, 224]}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(config))
    torch.save(DLNet("resnet18").state_dict(), tmp_path / "models" / "model.pt")
    loaded = load_network(tmp_path, "DLNet")
    assert loaded.network.config["backbone"] == "resnet18"  # from the shapes, not the config
    assert loaded.network.config["dropout"] == 0.3  # what shapes cannot tell comes from the config
    assert loaded.image_size == (224, 224)


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
    import json

    net = DLNet("resnet18", localization_activation="sigmoid").eval()
    with torch.no_grad():
        _, maps = net(torch.randn(1, 3, 64, 64))
    assert 0.0 < float(maps.min()) and float(maps.max()) < 1.0
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    network_def = {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "localization_activation": "sigmoid"}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def, "image_size": [64, 64]}))
    loaded = load_network(tmp_path, "DLNet")  # the activation has no weights: only the config can tell it
    assert isinstance(loaded.network.localization_head.output_act, torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="activation"):
        DLNet("resnet18", localization_activation="tanh")
