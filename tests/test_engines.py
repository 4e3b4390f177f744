"""Workflow pieces of the bundles: DLNet batch/loss/output adapters, ROC operating point, heatmap box precision,
LSNet masked Dice loss and ignore exclusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pneumonitor.networks import DLNetLoss
from pneumonitor.engines import (
    DLNetEngineLoss,
    DLNetOutputd,
    DLNetPrepareBatch,
    ExcludeIgnoredd,
    HeatmapBoxPrecisionMetric,
    ItemMeanMetric,
    MaskedBinaryDiceLoss,
    ROCOperatingPointMetric,
    SavePNGd,
    roc_operating_point,
)


def _batch(b: int = 2, h: int = 4) -> dict[str, torch.Tensor]:
    return {
        "image": torch.rand(b, 3, 8 * h, 8 * h),
        "label": torch.tensor([1, 0]),
        "target": torch.rand(b, 1, h, h),
        "has_target": torch.tensor([1.0, 0.0]),
    }


def test_prepare_batch_gives_image_and_targets() -> None:
    image, targets = DLNetPrepareBatch()(_batch(), device="cpu")
    assert image.shape == (2, 3, 32, 32)
    assert targets["label"].shape == (2, 1) and targets["label"].dtype == torch.float32
    assert targets["target"].shape == (2, 1, 4, 4) and targets["has_target"].tolist() == [1.0, 0.0]


def test_prepare_batch_without_targets_masks_localization() -> None:
    _, targets = DLNetPrepareBatch()({"image": torch.rand(3, 3, 32, 32)}, device="cpu")
    assert targets["label"] is None and targets["target"] is None
    assert targets["has_target"].tolist() == [0.0, 0.0, 0.0]


def test_engine_loss_equals_dlnet_loss() -> None:
    torch.manual_seed(0)
    logits, maps = torch.randn(2, 1), torch.rand(2, 8, 4, 4)
    _, targets = DLNetPrepareBatch()(_batch(), device="cpu")
    engine = DLNetEngineLoss(localization_weight=1e-2)((logits, maps), targets)
    direct = DLNetLoss(localization_weight=1e-2)(logits, maps, targets["label"], targets["target"],
                                                  targets["has_target"])
    assert torch.isclose(engine, direct)


def test_output_transform_gives_probability_heatmap_and_item_loss() -> None:
    logit, maps = torch.tensor([2.0]), torch.zeros(8, 4, 4)
    maps[3, 1, 2] = 0.9
    item = {
        "pred": [logit, maps],
        "label": {"label": torch.tensor([1.0]), "target": torch.zeros(1, 4, 4), "has_target": 1.0},
        "region": torch.zeros(1, 4, 4),
    }
    out = DLNetOutputd(keys="pred", loss=DLNetEngineLoss(localization_weight=1.0, mse_reduction="sum"))(item)
    assert math.isclose(float(out["pred"]), 1 / (1 + math.exp(-2)), rel_tol=1e-6)
    assert out["heatmap"].shape == (1, 4, 4) and float(out["heatmap"][0, 1, 2]) == pytest.approx(0.9)
    bce = math.log(1 + math.exp(-2))
    assert float(out["loss"]) == pytest.approx(bce + 0.81, rel=1e-5)  # lambda 1 x summed squared error
    assert torch.equal(out["truth_region"], torch.zeros(1, 4, 4))


def test_output_transform_marks_unknown_regions_nan() -> None:
    item = {
        "pred": [torch.tensor([0.0]), torch.zeros(8, 4, 4)],
        "label": {"label": torch.tensor([1.0]), "target": torch.zeros(1, 4, 4), "has_target": 0.0},
        "region": torch.zeros(1, 4, 4),
    }
    out = DLNetOutputd(keys="pred", heatmap_size=(16, 16))(item)
    assert torch.isnan(out["truth_region"]).all() and out["heatmap"].shape == (1, 16, 16)


def test_roc_operating_point_nearest_corner() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.45, 0.5, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    point = roc_operating_point(scores, labels)
    # ROC points: t=0.45 (FPR 0.25, TPR 1) is nearest (0, 1); t=0.5 (0.25, 0.75) and t=0.8 (0, 0.5) are farther
    assert point["threshold"] == 0.45
    assert point["sensitivity"] == 1.0 and point["specificity"] == 0.75 and point["ppv"] == 0.8
    called = scores >= point["threshold"]
    assert point["sensitivity"] == pytest.approx((called & (labels == 1)).sum() / 4)
    assert point["specificity"] == pytest.approx((~called & (labels == 0)).sum() / 4)
    assert point["accuracy"] == pytest.approx((called == (labels == 1)).mean())


def test_roc_metric_accumulates_batches_and_is_nan_for_one_class() -> None:
    metric = ROCOperatingPointMetric("sensitivity")
    metric(torch.tensor([[0.9], [0.2]]), torch.tensor([[1.0], [0.0]]))
    metric(torch.tensor([[0.8], [0.1]]), torch.tensor([[1.0], [0.0]]))
    assert metric.aggregate() == 1.0
    single = ROCOperatingPointMetric("accuracy")
    single(torch.tensor([[0.9]]), torch.tensor([[1.0]]))
    assert math.isnan(single.aggregate())
    with pytest.raises(ValueError):
        ROCOperatingPointMetric("f1")


def test_heatmap_box_precision_perfect_wrong_and_skipped() -> None:
    region = torch.zeros(1, 1, 16, 16)
    region[0, 0, 4:10, 4:10] = 1
    metric = HeatmapBoxPrecisionMetric(threshold=0.8)
    metric(region.clone(), region)  # perfect box
    shifted = torch.zeros(1, 1, 16, 16)
    shifted[0, 0, 12:16, 12:16] = 1
    metric(shifted, region)  # no overlap: 0
    metric(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))  # nothing anywhere: skipped
    metric(region.clone(), torch.full((1, 1, 16, 16), float("nan")))  # unknown truth: skipped
    assert metric.aggregate() == pytest.approx(0.5)


def test_item_mean() -> None:
    metric = ItemMeanMetric()
    metric([torch.tensor(1.0), torch.tensor(2.0)], [torch.tensor(1.0), torch.tensor(2.0)])
    metric([torch.tensor(6.0)], [torch.tensor(6.0)])
    assert metric.aggregate() == pytest.approx(3.0)


def test_masked_dice_ignores_ignore_label() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert float(MaskedBinaryDiceLoss()(perfect, target)) < 1e-3
    ignored = target.clone()
    ignored[..., 6:, :] = -1  # the logits say "lung" there; ignored, so the loss stays ~0
    logits = perfect.clone()
    logits[..., 6:, :] = 20.0
    assert float(MaskedBinaryDiceLoss()(logits, ignored)) < 1e-3
    assert float(MaskedBinaryDiceLoss()(logits, target)) > 0.1  # not ignored: penalized


def test_exclude_ignored_zeroes_both() -> None:
    label = torch.tensor([[[1.0, -1.0], [0.0, 1.0]]])
    pred = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    out = ExcludeIgnoredd(keys=("pred", "label"))({"pred": pred, "label": label})
    assert out["label"].tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    assert out["pred"].tolist() == [[[1.0, 0.0], [1.0, 0.0]]]


def test_save_png_resizes_to_the_stored_image(tmp_path) -> None:
    from PIL import Image

    image = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": "/x/study.dcm", "spatial_shape": (20, 30)})
    heatmap = torch.zeros(1, 8, 8)
    heatmap[0, :4] = 1.0
    out = SavePNGd(keys="heatmap", output_dir=str(tmp_path), output_postfix="heatmap")(
        {"image": image, "heatmap": heatmap}
    )
    saved = np.asarray(Image.open(out["heatmap_path"]))
    assert out["heatmap_path"].endswith("study_heatmap.png")
    assert saved.shape == (20, 30) and saved[0, 0] == 255 and saved[-1, -1] == 0  # rows stay rows


def test_group_balanced_weights_draw_each_group_equally() -> None:
    from pneumonitor.engines import group_balanced_weights

    items = [{"source": "a", "label": 1}] * 90 + [{"source": "a", "label": 0}] * 10 + [{"source": "b", "label": 0}] * 50
    weights = group_balanced_weights(items)
    assert weights.sum().item() == pytest.approx(len(items))
    totals = [weights[:90].sum(), weights[90:100].sum(), weights[100:].sum()]
    assert all(t.item() == pytest.approx(len(items) / 3) for t in totals)
    # sampling with them: each group near a third of the draws
    draws = list(torch.utils.data.WeightedRandomSampler(weights, 30000, generator=torch.Generator().manual_seed(0)))
    shares = np.bincount(np.digitize(draws, [90, 100]), minlength=3) / len(draws)
    assert np.allclose(shares, 1 / 3, atol=0.02)
    assert torch.allclose(group_balanced_weights(items, power=0.0), torch.ones(len(items), dtype=torch.float64))
    with pytest.raises(ValueError):
        group_balanced_weights([])


def test_nested_weights_balance_sources_then_labels_then_localization() -> None:
    from pneumonitor.engines import group_balanced_weights

    items = ([{"source": "covid", "label": 1, "loc": 1}] * 10 + [{"source": "covid", "label": 1, "loc": 0}] * 80
             + [{"source": "covid", "label": 0, "loc": 1}] * 5 + [{"source": "jsrt", "label": 0, "loc": 1}] * 40)
    weights = group_balanced_weights(items, keys=("source", "label", "loc"), nested=True)
    n = len(items)
    shares = [weights[:10].sum() / n, weights[10:90].sum() / n, weights[90:95].sum() / n, weights[95:].sum() / n]
    # sources 1/2 each; covid: labels 1/4 each; covid positives: localized / not 1/8 each
    assert [s.item() for s in shares] == pytest.approx([1 / 8, 1 / 8, 1 / 4, 1 / 2])
    assert weights.sum().item() == pytest.approx(n)
