"""Fitting DLNet's extent head (:class:`pneumonitor.networks.ExtentHead`) to expert geographic-extent scores.

Why: trained with the paper's losses, the area of DLNet's heatmap does not track the experts' extent (r 0.42, MAE
above the mean-score baseline on the test patients; DLNet card). The experts' scores are the supervision the issue
asks for, and a linear head over the stride-16 features, pooled over each lung, reads them off the frozen network.

How: every expert-scored image of the training split goes through the served DLNet and LSNet exactly as
``pneumonitor analyze`` sees it (same preprocessing, same lung mask, same split into right and left lung); each lung's
stride-16 features are averaged with the weight of the lung's pixels in each cell (the cells a nearest resize of the
extent map gives those pixels: :func:`lung_cell_weights`). A ridge regression then fits ``e = w . f_lung + b`` to

* the total 0-8 score ``T`` (COVIDx-S / official geographic extent): ``w . (f_right + f_left) + 2 b = T``;
* the per-lung 0-4 scores where the experts gave them (official scores): ``w . f_lung + b = s_lung``;
* optionally adult normal radiographs of the training split as ``T = 0`` (``normals``).

Features are standardised on the training lungs; the intercept is not penalised.

The **lung classifier** (``--lung-classifier``; channels 1 and 2 of the head) is an L2-penalised logistic regression of
the label on ``(f_right, f_left)`` of every training image (pneumonia or not), weighted as the training sampler draws
them (``group_balanced_weights`` over source and label, power 0.5); its penalty is chosen on the validation split by
ROC AUC. It only sees the lungs, which is the point: the whole-image classification head can also read the source
and the borders of a radiograph. The ridge strength ``alpha`` is
chosen on the **validation** patients by the MAE of the 0-8 score the severity pipeline would report (per lung
``lung_score(extent_ratio(e))``, 0 for images below the classification threshold), the test split is never read.
:func:`write_extent_head` folds the standardisation into the 1x1 convolution and writes it into the bundle's
``models/model.pt`` (``network_def.extent_head`` true, ``severity_rule`` ``extent-head`` in ``inference.json``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumonitor.networks.bundle import (
    WEIGHTS,
    build_network,
    read_inference_config,
    torch_save_atomic,
    update_inference_config,
)
from pneumonitor.reading import read_radiograph
from pneumonitor.severity import InsufficientLungs, extent_ratio, lung_score, split_lungs

__all__ = [
    "ALPHAS",
    "ExtentExample",
    "ExtentFit",
    "lung_cell_weights",
    "lung_features",
    "collect_examples",
    "require_single_dlnet",
    "fit_ridge",
    "predicted_scores",
    "choose_and_fit",
    "write_extent_head",
    "LAMBDAS",
    "LungClassifierFit",
    "fit_lung_classifier",
    "choose_lung_classifier",
]

logger = logging.getLogger(__name__)

#: ridge strengths tried on the validation split
ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
#: L2 penalties of the lung classifier tried on the validation split
LAMBDAS = (0.001, 0.003, 0.01, 0.03, 0.1)


@dataclass
class ExtentExample:
    """One radiograph's lung-pooled features and expert scores (NaN: not scored)."""

    image: str
    features: np.ndarray  # (2, C): right lung, left lung
    probability: float
    total: float = math.nan
    right: float = math.nan
    left: float = math.nan
    label: int = -1
    source: str = ""


@dataclass
class ExtentFit:
    """A fitted head: ``e = weight . f_lung + bias`` on raw features, and how it was chosen."""

    weight: np.ndarray
    bias: float
    alpha: float
    #: per alpha tried: validation MAE, bias, Pearson r of the 0-8 score, n
    table: list[dict[str, float]] = field(default_factory=list)
    n_training: int = 0
    n_validation: int = 0
    #: the gate the validation scores were judged under (0: the head alone)
    classification_threshold: float = math.nan

    def record(self) -> dict[str, Any]:
        """What ``inference.json`` keeps of the fit (``extent_head_fit``)."""
        return {"alpha": self.alpha, "n_training": self.n_training, "n_validation": self.n_validation,
                "classification_threshold": self.classification_threshold, "validation": self.table}


def lung_cell_weights(lung: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """``(h, w)`` counts of ``lung``'s pixels per cell of a ``grid``-sized map resized to the lung's size with
    nearest neighbour (torch's rule: pixel ``i`` takes cell ``floor(i * h / H)``), so that
    ``(map * weights).sum() / weights.sum()`` is the map's mean over the lung after that resize."""
    lung = np.asarray(lung, dtype=bool)
    height, width = lung.shape
    h, w = int(grid[0]), int(grid[1])
    rows = np.minimum(np.floor(np.arange(height, dtype=np.float64) * (h / height)).astype(int), h - 1)
    cols = np.minimum(np.floor(np.arange(width, dtype=np.float64) * (w / width)).astype(int), w - 1)
    weights = np.zeros((h, w), dtype=np.float64)
    r, c = np.nonzero(lung)
    np.add.at(weights, (rows[r], cols[c]), 1.0)
    return weights


def require_single_dlnet(analyzer: Any) -> None:
    """Refuse an Analyzer whose DLNet is an ensemble (:class:`pneumonitor.networks.DLNetEnsemble`): its extent head
    is one member's, read from that member's layers, which the ensemble does not expose.

    Raises:
        ValueError: with what to do instead.
    """
    if not hasattr(analyzer.dlnet.network, "stage_outputs"):
        raise ValueError(f"{analyzer.dlnet.source} is an ensemble of DLNets: fit the extent head of its localization "
                         "member's own bundle, then combine again (pneumonitor ensemble-dlnet)")


@torch.inference_mode()
def lung_features(analyzer: Any, radiograph: Any) -> tuple[np.ndarray, float]:
    """``(2, C)`` stride-16 features of DLNet averaged over the right and left lung (as :func:`lung_cell_weights`
    weighs them) and the pneumonia probability, for one radiograph, through ``analyzer`` (an
    :class:`pneumonitor.inference.Analyzer` with both networks).

    Raises:
        InsufficientLungs: the lung mask has no right or no left lung.
    """
    network = analyzer.dlnet.network
    c8, c16, c32 = network.stage_outputs(analyzer.dlnet_input(radiograph)[None].to(analyzer.device))
    probability = float(torch.sigmoid(network.classification_head(c32)[0, 0].float()))
    right, left = split_lungs(analyzer.lung_mask(analyzer.lungs(radiograph)))
    if not right.any() or not left.any():
        raise InsufficientLungs("lung segmentation found fewer than two lungs")
    features = c16[0].float().cpu().numpy()
    pooled = []
    for lung in (right, left):
        weights = lung_cell_weights(lung, features.shape[1:])
        pooled.append((features * weights).sum(axis=(1, 2)) / weights.sum())
    return np.stack(pooled), probability


def _number(value: Any) -> float:
    return float(value) if value not in (None, "") else math.nan


def collect_examples(
    analyzer: Any, items: Iterable[dict[str, Any]], progress: Callable[[int, int], None] | None = None,
    mirror: bool = False,
) -> list[ExtentExample]:
    """Examples of datalist ``items`` (``image``; ``severity`` = total, ``severity_right``/``severity_left``; items
    without any score count as ``T = 0``: pass only the normals wanted as such). Unreadable images and images without
    two lungs are left out with a log line.

    ``mirror``: each image also mirrored left-right (the patient's left lung then lies where a right lung lies, so its
    per-lung scores swap; total and label stay), the horizontal flip DLNet was trained with: twice the examples for
    the fit (on the validation images, 0-8 MAE 1.40 -> 1.37, r 0.64 -> 0.65 at the shipped strength)."""
    require_single_dlnet(analyzer)  # before the loop: its per-image guard would skip every image instead
    items = list(items)
    examples = []
    for index, item in enumerate(items):
        total, right, left = (_number(item.get(k)) for k in ("severity", "severity_right", "severity_left"))
        if all(math.isnan(v) for v in (total, right, left)):
            total = 0.0
        label, source = int(item.get("label", -1)), str(item.get("source", ""))
        try:
            radiograph = read_radiograph(item["image"])
            features, probability = lung_features(analyzer, radiograph)
            examples.append(ExtentExample(str(item["image"]), features, probability, total, right, left, label, source))
            if mirror:
                mirrored = replace(radiograph, pixels=np.ascontiguousarray(radiograph.pixels[:, ::-1]))
                features, probability = lung_features(analyzer, mirrored)
                examples.append(ExtentExample(f"{item['image']} (mirrored)", features, probability, total, left, right,
                                              label, source))
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the fit
            logger.warning("extent head: %s left out (%s: %s)", item["image"], type(exc).__name__, exc)
            continue
        if progress is not None:
            progress(index + 1, len(items))
    return examples


def fit_ridge(examples: Sequence[ExtentExample], alpha: float) -> tuple[np.ndarray, float]:
    """Ridge fit of ``e = weight . f_lung + bias`` (module docstring) on raw features: ``(weight (C,), bias)``."""
    features = np.stack([e.features for e in examples]).astype(np.float64)  # (N, 2, C)
    mean = features.reshape(-1, features.shape[-1]).mean(axis=0)
    scale = features.reshape(-1, features.shape[-1]).std(axis=0) + 1e-6
    z = (features - mean) / scale
    rows, targets = [], []
    for zi, example in zip(z, examples):
        if not math.isnan(example.total):
            rows.append(np.r_[zi[0] + zi[1], 2.0])
            targets.append(example.total)
        for side, score in ((0, example.right), (1, example.left)):
            if not math.isnan(score):
                rows.append(np.r_[zi[side], 1.0])
                targets.append(score)
    if not rows:
        raise ValueError("no expert-scored example to fit the extent head on")
    design, target = np.asarray(rows), np.asarray(targets)
    penalty = alpha * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ target)
    weight = solution[:-1] / scale
    return weight, float(solution[-1] - weight @ mean)


def predicted_scores(
    examples: Sequence[ExtentExample], weight: np.ndarray, bias: float, classification_threshold: float
) -> np.ndarray:
    """The 0-8 scores the severity pipeline reports with this head: per lung ``lung_score(extent_ratio(e))``, 0 for
    an image below ``classification_threshold``."""
    scores = []
    for example in examples:
        if example.probability < classification_threshold:
            scores.append(0)
            continue
        extents = example.features @ weight + bias
        scores.append(sum(lung_score(extent_ratio(e)) for e in extents))
    return np.asarray(scores, dtype=np.float64)


def choose_and_fit(
    training: Sequence[ExtentExample],
    validation: Sequence[ExtentExample],
    classification_threshold: float,
    alphas: Sequence[float] = ALPHAS,
) -> ExtentFit:
    """Fit on ``training`` for each ``alpha``, keep the one with the lowest 0-8 MAE on the expert-scored
    ``validation`` examples (ties: the stronger penalty)."""
    scored = [e for e in validation if not math.isnan(e.total)]
    if not scored:
        raise ValueError("no expert-scored validation example to choose the ridge strength on")
    reference = np.asarray([e.total for e in scored])
    table, best = [], None
    for alpha in sorted(alphas):
        weight, bias = fit_ridge(training, alpha)
        predicted = predicted_scores(scored, weight, bias, classification_threshold)
        mae = float(np.abs(predicted - reference).mean())
        r = float(np.corrcoef(predicted, reference)[0, 1]) if predicted.std() > 0 and reference.std() > 0 else math.nan
        table.append({"alpha": alpha, "mae": round(mae, 4), "bias": round(float((predicted - reference).mean()), 4),
                      "r": round(r, 4), "n": len(scored)})
        if best is None or mae <= best[0]:
            best = (mae, alpha, weight, bias)
    _, alpha, weight, bias = best
    return ExtentFit(weight, bias, alpha, table, len(training), len(scored), classification_threshold)


@dataclass
class LungClassifierFit:
    """A fitted lung classifier: logit = ``right . f_right + left . f_left + bias`` on raw features."""

    right: np.ndarray
    left: np.ndarray
    bias: float
    penalty: float
    #: per penalty tried: validation AUC, n
    table: list[dict[str, float]] = field(default_factory=list)
    n_training: int = 0

    def record(self) -> dict[str, Any]:
        return {"penalty": self.penalty, "n_training": self.n_training, "validation": self.table}

    def logits(self, examples: Sequence[ExtentExample]) -> np.ndarray:
        return np.asarray([e.features[0] @ self.right + e.features[1] @ self.left + self.bias for e in examples])


def fit_lung_classifier(examples: Sequence[ExtentExample], penalty: float,
                        sample_weights: Sequence[float] | None = None) -> LungClassifierFit:
    """L2-penalised logistic regression of ``label`` on ``(f_right, f_left)`` (standardised; the intercept is not
    penalised), by L-BFGS; mean weighted log-loss + ``penalty * |w|^2``."""
    labelled = [e for e in examples if e.label in (0, 1)]
    if len({e.label for e in labelled}) < 2:
        raise ValueError("the lung classifier needs training images of both labels")
    x = np.stack([e.features.reshape(-1) for e in labelled]).astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    inputs = torch.from_numpy((x - mean) / scale)
    target = torch.tensor([float(e.label) for e in labelled], dtype=torch.float64)
    weights = torch.ones(len(labelled), dtype=torch.float64) if sample_weights is None else torch.as_tensor(
        [w for w, e in zip(sample_weights, examples) if e.label in (0, 1)], dtype=torch.float64)
    w = torch.zeros(inputs.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(
            inputs @ w + b, target, reduction="none")).mean() + penalty * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    raw = w.detach().numpy() / scale
    half = raw.size // 2
    return LungClassifierFit(raw[:half], raw[half:], float(b.item() - raw @ mean), penalty, n_training=len(labelled))


def choose_lung_classifier(
    training: Sequence[ExtentExample], validation: Sequence[ExtentExample], penalties: Sequence[float] = LAMBDAS
) -> LungClassifierFit:
    """Fit on ``training`` (weighted as the training sampler draws: source x label, power 0.5) for each penalty and
    keep the one with the highest ROC AUC on ``validation`` (ties: the stronger penalty)."""
    from monai.metrics import compute_roc_auc

    from pneumonitor.engines.sampling import group_balanced_weights

    scored = [e for e in validation if e.label in (0, 1)]
    if len({e.label for e in scored}) < 2:
        raise ValueError("no validation images of both labels to choose the lung classifier's penalty on")
    weights = group_balanced_weights([{"source": e.source, "label": e.label} for e in training], power=0.5)
    labels = torch.tensor([float(e.label) for e in scored])
    best, table = None, []
    for penalty in sorted(penalties):
        fit = fit_lung_classifier(training, penalty, weights.tolist())
        auc = float(compute_roc_auc(torch.from_numpy(fit.logits(scored)).float(), labels))
        table.append({"penalty": penalty, "auc": round(auc, 4), "n": len(scored)})
        if best is None or auc >= best[0]:
            best = (auc, fit)
    best[1].table = table
    return best[1]


def write_extent_head(bundle: str | Path, fit: ExtentFit, classifier: LungClassifierFit | None = None) -> Path:
    """Write ``fit`` (and ``classifier``) into the DLNet bundle: ``extent_head.conv`` in ``models/model.pt`` (in the
    dtype the other weights are stored in), ``network_def.extent_head`` true, ``severity_rule`` ``extent-head`` and
    the fit's record (``extent_head_fit``) in ``configs/inference.json``; with ``classifier`` also
    ``network_def.lung_classifier`` true, channels 1-2 (its bias split evenly between them: each lung's mean adds
    its channel's bias once), ``probability_source`` ``lung-classifier`` and ``lung_classifier_fit``. The
    classification threshold then needs choosing again on validation (``pneumonitor evaluate --split validation
    --save-operating-point``). Returns the ``inference.json`` path.

    Raises:
        ValueError: the bundle's weights do not fit its network_def with an extent head of ``fit``'s width.
    """
    bundle = Path(bundle)
    config = read_inference_config(bundle)
    network_def = {**config["network_def"], "extent_head": True, "lung_classifier": classifier is not None}
    state = torch.load(bundle / WEIGHTS, map_location="cpu", weights_only=True)
    dtype = next(v.dtype for v in state.values() if torch.is_floating_point(v))
    state = {k: v for k, v in state.items() if not k.startswith("extent_head.")}
    weights, biases = [fit.weight], [fit.bias]
    if classifier is not None:
        weights += [classifier.right, classifier.left]
        biases += [classifier.bias / 2.0, classifier.bias / 2.0]
    state["extent_head.conv.weight"] = torch.as_tensor(np.stack(weights), dtype=dtype)[:, :, None, None]
    state["extent_head.conv.bias"] = torch.as_tensor(biases, dtype=dtype)
    try:
        build_network(network_def).load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the extent head does not fit {bundle / WEIGHTS}: {exc}") from exc
    torch_save_atomic(state, bundle / WEIGHTS)
    settings: dict[str, Any] = {"severity_rule": "extent-head", "extent_head_fit": fit.record()}
    if classifier is not None:
        settings.update(probability_source="lung-classifier", lung_classifier_fit=classifier.record())
    else:
        settings["probability_source"] = "classification-head"
    return update_inference_config(bundle, network_def=network_def, **settings)
