"""Grad-CAM proposals: a tiny DLNet trained on synthetic blobs finds them inside loose boxes; pipeline constants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumonitor.stage2.gradcam import (
    GradCAMProposer,
    GradCAMSettings,
    LocalizationScore,
    combine_cams,
    proposal_from_cam,
)
from pneumonitor.networks import DLNet, DLNetLoss
from pneumonitor.transforms import dlnet_preprocess
from pneumonitor.transforms.targets import LocalizationTarget

SIZE = 64
MARGIN = 10  # px between the blob and the box a proposal is asked for: a loose box
TRAIN_MARGIN = 2  # px around the blob of the stage-1 training boxes
CLAHE_TILES = 2  # 8 tiles of 8 px would flatten the blobs of a 64 px image


def _tiny_dlnet() -> DLNet:
    return DLNet(backbone="resnet18", dense_units=(32, 16), fpn_channels=16, localization_maps=8)


def _sample(
    rng: np.random.Generator, positive: bool, margin: int = MARGIN
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """(image (64, 64) in [0, 1], blob mask bool, [box ``margin`` px around the blob]), one bright disc per positive."""
    image = np.clip(0.35 + 0.05 * rng.standard_normal((SIZE, SIZE)), 0, 1).astype(np.float32)
    blob = np.zeros((SIZE, SIZE), dtype=bool)
    if not positive:
        return image, blob, []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = rng.uniform(5, 8)
    cy, cx = rng.uniform(16, SIZE - 16, size=2)
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    image = np.clip(image + 0.45 * blob, 0, 1).astype(np.float32)
    rows, cols = np.nonzero(blob)
    box = [max(0, cols.min() - margin), max(0, rows.min() - margin),
           min(SIZE, cols.max() + 1 + margin), min(SIZE, rows.max() + 1 + margin)]
    return image, blob, [[int(v) for v in box]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_dlnet() -> DLNet:
    """A tiny DLNet trained as stage 1 (label + box targets) for 80 steps on 64 synthetic 64x64 images.

    The localization term is weighted up (lambda 20 on the mean squared error) so that the maps learn in few steps;
    BatchNorm statistics are then recomputed over the training images (60-80 steps at lr 1e-3 leave the running
    averages behind the weights, and eval mode would misclassify).
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    preprocess = dlnet_preprocess((SIZE, SIZE), clahe_tile_grid=CLAHE_TILES)
    target = LocalizationTarget(SIZE // 8, dilation=1, sigma=0.0)
    samples = [_sample(rng, positive=i % 2 == 0, margin=TRAIN_MARGIN) for i in range(64)]
    images = torch.stack([torch.as_tensor(np.asarray(preprocess(s[0][None]))) for s in samples]).float()
    labels = torch.tensor([[float(s[1].any())] for s in samples])
    targets = torch.stack([target((SIZE, SIZE), boxes=s[2])[0] for s in samples])
    network = _tiny_dlnet()
    loss_fn = DLNetLoss(localization_weight=20.0, mse_reduction="mean")
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        batch = torch.randint(0, len(samples), (8,), generator=generator)
        logits, maps = network(images[batch])
        loss = loss_fn(logits, maps, labels[batch], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the passes below
    with torch.no_grad():
        for start in range(0, len(samples), 16):
            network(images[start : start + 16])
    return network.eval()


def test_proposal_beats_box_on_trained_model(trained_dlnet: DLNet) -> None:
    rng = np.random.default_rng(1)
    proposer = GradCAMProposer(trained_dlnet, (SIZE, SIZE), clahe_tile_grid=CLAHE_TILES)
    proposal_iou, box_iou = [], []
    for _ in range(20):
        image, blob, boxes = _sample(rng, positive=True)
        proposal = proposer(image, boxes)
        assert proposal.probability > 0.5  # the model did learn the task
        assert not proposal.soft[~proposal.box_mask].any()
        proposal_iou.append(_iou(proposal.binary, blob))
        box_iou.append(_iou(proposal.box_mask, blob))
    print(f"mean IoU with the blob: proposal {np.mean(proposal_iou):.3f}, box {np.mean(box_iou):.3f}")
    assert np.mean(proposal_iou) > np.mean(box_iou) + 0.02, (proposal_iou, box_iou)


def test_proposal_zero_outside_box_and_shapes() -> None:
    torch.manual_seed(0)
    proposer = GradCAMProposer(_tiny_dlnet(), (SIZE, SIZE), GradCAMSettings(threshold=0.0),
                               clahe_tile_grid=CLAHE_TILES)
    image = np.random.default_rng(0).random((80, 100)).astype(np.float32)
    boxes = [[10, 20, 40, 50], [60, 5, 90, 30]]
    proposal = proposer(image, boxes)
    assert proposal.cam.shape == proposal.soft.shape == proposal.binary.shape == (80, 100)
    assert 0.0 <= proposal.cam.min() and proposal.cam.max() <= 1.0
    assert proposal.box_mask.sum() == 30 * 30 + 30 * 25
    outside = ~proposal.box_mask
    assert not proposal.binary[outside].any() and float(np.abs(proposal.soft[outside]).max()) == 0.0
    # threshold 0 keeps every box pixel: the edge blur then only softens the boxes' own borders
    assert proposal.binary[proposal.box_mask].all()
    assert proposal.soft[35, 25] == pytest.approx(1.0, abs=1e-3) and proposal.soft[20, 10] < 1.0
    assert set(proposal.stage_maps) == {"backbone.layer3", "backbone.layer4"}
    assert proposal.stage_maps["backbone.layer3"].shape == (4, 4)
    assert proposal.stage_maps["backbone.layer4"].shape == (2, 2)
    assert 0.0 <= proposal.probability <= 1.0


def test_combine_cams_resizes_takes_max_and_normalizes() -> None:
    coarse = np.zeros((4, 4), dtype=np.float32)
    coarse[1, 1] = 2.0  # peak in the upper-left quadrant
    coarser = np.zeros((2, 2), dtype=np.float32)
    coarser[1, 1] = 50.0  # a much larger raw magnitude in the lower-right quadrant
    cam = combine_cams([coarse, coarser], (64, 64), smooth_sigma=0.0, normalize_each=True)
    assert cam.shape == (64, 64) and cam.min() == 0.0 and cam.max() == pytest.approx(1.0)
    assert cam[24, 24] > 0.9 and cam[56, 56] > 0.9  # both stages count after per-map scaling
    raw = combine_cams([coarse, coarser], (64, 64), smooth_sigma=0.0, normalize_each=False)
    assert raw[24, 24] < 0.1 < 0.9 < raw[56, 56]  # without it the larger magnitude decides alone
    spot = np.zeros((64, 64), dtype=np.float32)
    spot[30:34, 30:34] = 1.0
    sharp = combine_cams([spot], (64, 64), smooth_sigma=0.0)
    smooth = combine_cams([spot], (64, 64), smooth_sigma=0.05)  # sigma 3.2 px
    assert smooth.max() == pytest.approx(1.0)
    assert np.abs(np.diff(smooth, axis=0)).max() < np.abs(np.diff(sharp, axis=0)).max()
    assert not combine_cams([np.zeros((4, 4))], (8, 8)).any()  # no activation -> no proposal


def test_threshold_and_box_product() -> None:
    cam = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (50, 1))  # value = column / 99
    box = np.zeros((50, 100), dtype=bool)
    box[10:40, 20:90] = True
    binary, soft = proposal_from_cam(cam, box, threshold=0.4, edge_sigma=0.0)
    assert binary.any() and not binary[~box].any()
    assert binary[10:40, 40:90].all() and not binary[:, :40].any()  # column 40 is the first >= 0.4
    np.testing.assert_array_equal(soft, binary.astype(np.float32))
    higher, _ = proposal_from_cam(cam, box, threshold=0.8, edge_sigma=0.0)
    assert higher.sum() < binary.sum() and not higher[:, :80].any()
    _, blurred = proposal_from_cam(cam, box, threshold=0.4, edge_sigma=0.05)
    assert not blurred[~box].any() and 0 < blurred[25, 40] < 1 and blurred[25, 39] > 0
    with pytest.raises(ValueError, match="differ in shape"):
        proposal_from_cam(cam, box[:10])


def test_settings_validate_and_score_modes() -> None:
    with pytest.raises(ValueError, match="score"):
        GradCAMSettings(score="mean")
    with pytest.raises(ValueError, match="threshold"):
        GradCAMSettings(threshold=1.5)
    with pytest.raises(ValueError, match="no module"):
        GradCAMProposer(_tiny_dlnet(), (SIZE, SIZE), GradCAMSettings(layers=("backbone.layer9",)))
    torch.manual_seed(0)
    network = _tiny_dlnet().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    region = torch.zeros(2, 1, 8, 8)
    region[:, :, 2:5, 3:6] = 1
    with torch.no_grad():
        whole = LocalizationScore(network, score="sum")(x, region)
        inside = LocalizationScore(network, score="box_sum")(x, region)
        peak = LocalizationScore(network, score="box_max_mean")(x, region)
        conv = network.localization_head.output_conv
        captured = {}
        handle = conv.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        network(x)
        handle.remove()
    out = captured["out"]
    torch.testing.assert_close(whole[:, 0], out.flatten(1).sum(1))
    torch.testing.assert_close(inside[:, 0], (out * region).flatten(1).sum(1))
    torch.testing.assert_close(peak[:, 0], out.amax(1)[:, 2:5, 3:6].flatten(1).mean(1))
