"""Grad-CAM pneumonia proposals from a box: the stage-2 masks of Amer et al. 2020 (Sec. III-B, Fig. 3-4).

A trained DLNet (stage 1) turns a coarse box label into a finer pneumonia mask:

1. a scalar *localization score* is read from the output of the localization head's last convolution
   (``localization_head.output_conv``, before its ReLU): by default the mean, over the map cells covered by the
   boxes, of the per-cell maximum over the 128 maps (the heatmap's value inside the boxes);
2. Grad-CAM (Selvaraju et al. 2017; MONAI's :class:`monai.visualize.GradCAM` machinery) of that score at two
   backbone stages: stride 16 (``backbone.layer3``, "Act-28" at 448 px) and stride 32 (``backbone.layer4``,
   "Act-14"); each map is ``ReLU(sum_c mean(dS/dA_c) * A_c)``;
3. each map is resized (bilinear) to the radiograph's size and scaled to [0, 1] by its maximum;
4. the two are combined by their pixel-wise maximum, smoothed (Gaussian), min-max normalized to [0, 1];
5. thresholded (``cam >= 0.4``) and multiplied by the box mask (removes activations outside the label);
6. the edges are Gaussian-blurred and the result is multiplied by the box mask again, so that the soft proposal is
   exactly zero outside the boxes.

Every constant is a field of :class:`GradCAMSettings`. Lengths (the two blur sigmas) are fractions of the
radiograph's shorter side, so that a proposal looks the same at any stored resolution (0.01 = 4.5 px at 448 px).

Shapes: radiographs ``(H, W)`` float in [0, 1] (MONOCHROME2, as :func:`pneumonitor.reading.read_radiograph` gives them);
boxes ``[[x0, y0, x1, y1], ...]`` in pixels of that radiograph, end-exclusive (:mod:`pneumonitor.datasets.bounding_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from scipy import ndimage
from torch import nn

from pneumonitor.datasets.bounding_boxes import boxes_to_mask
from pneumonitor.transforms.targets import boxes_to_map

__all__ = [
    "GradCAMSettings",
    "LocalizationScore",
    "DLNetGradCAM",
    "Proposal",
    "GradCAMProposer",
    "combine_cams",
    "proposal_from_cam",
    "STAGE_LAYERS",
    "SCORE_MODES",
]

#: DLNet module names of the two Grad-CAM stages (paper's names at 448 px input)
STAGE_LAYERS: dict[str, str] = {"Act-28": "backbone.layer3", "Act-14": "backbone.layer4"}
#: how the scalar localization score is read from the last conv output (see :class:`LocalizationScore`)
SCORE_MODES: tuple[str, ...] = ("box_max_mean", "box_sum", "sum")


@dataclass
class GradCAMSettings:
    """Every constant of the proposal pipeline.

    Attributes:
        layers: DLNet module names whose Grad-CAM maps are combined (default: "Act-28" and "Act-14").
        target_layer: the localization head's last convolution, whose output the score is read from.
        score: ``box_max_mean`` (mean over the boxes' map cells of the max over maps), ``box_sum`` (sum over the
            boxes' cells and all maps) or ``sum`` (sum over the whole output, boxes ignored).
        smooth_sigma: Gaussian sigma of the smoothing of the combined map, as a fraction of the shorter image side.
        threshold: the combined, normalized map is kept where ``>= threshold`` (paper: 0.4).
        edge_sigma: Gaussian sigma of the edge blur, as a fraction of the shorter image side (0 = no blur).
        normalize_each: scale each stage's map to [0, 1] before the pixel-wise max (the two stages' raw magnitudes
            are not comparable; without it the larger one decides alone).
    """

    layers: tuple[str, ...] = (STAGE_LAYERS["Act-28"], STAGE_LAYERS["Act-14"])
    target_layer: str = "localization_head.output_conv"
    score: str = "box_max_mean"
    smooth_sigma: float = 0.01
    threshold: float = 0.4
    edge_sigma: float = 0.01
    normalize_each: bool = True

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        if not self.layers:
            raise ValueError("at least one Grad-CAM layer is needed")
        if self.score not in SCORE_MODES:
            raise ValueError(f"score must be one of {SCORE_MODES}, got {self.score!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.smooth_sigma < 0 or self.edge_sigma < 0:
            raise ValueError("smooth_sigma and edge_sigma must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out


class LocalizationScore(nn.Module):
    """Wraps DLNet so that its output is the scalar localization score Grad-CAM differentiates.

    ``forward(x, region)`` with ``x`` ``(B, C, H, W)`` (preprocessed) and ``region`` ``(B, 1, H/8, W/8)`` 0/1 (the
    boxes at the maps' resolution; ignored by ``score="sum"``) returns ``(B, 1)``. The last conv output is captured
    with a forward hook, so DLNet itself is unchanged; the classification logit of the same pass is kept in
    ``last_logits`` ``(B, 1)``.

    The wrapped network is reachable as ``.network``: hook names are ``network.<DLNet module name>``.
    """

    def __init__(self, network: nn.Module, target_layer: str = "localization_head.output_conv",
                 score: str = "box_max_mean") -> None:
        super().__init__()
        if score not in SCORE_MODES:
            raise ValueError(f"score must be one of {SCORE_MODES}, got {score!r}")
        self.network = network
        self.score = score
        modules = dict(network.named_modules())
        if target_layer not in modules:
            raise ValueError(f"the network has no module {target_layer!r}")
        self._conv_output: torch.Tensor | None = None
        modules[target_layer].register_forward_hook(self._capture)
        self.last_logits: torch.Tensor | None = None

    def _capture(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._conv_output = output

    def forward(self, x: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        logits, _ = self.network(x)
        self.last_logits = logits.detach()
        conv = self._conv_output
        if conv is None:
            raise RuntimeError("the localization head's last convolution did not run")
        if self.score == "sum" or region is None:
            return conv.flatten(1).sum(1, keepdim=True)
        region = region.to(conv.dtype)
        if region.shape[-2:] != conv.shape[-2:]:
            raise ValueError(f"region {tuple(region.shape[-2:])} does not match the maps {tuple(conv.shape[-2:])}")
        # an empty region (box outside the image) falls back to the whole map rather than a zero gradient
        region = torch.where(region.flatten(1).sum(1).reshape(-1, 1, 1, 1) > 0, region, torch.ones_like(region))
        if self.score == "box_sum":
            return (conv * region).flatten(1).sum(1, keepdim=True)
        peak = conv.amax(dim=1, keepdim=True)  # (B, 1, h, w): the heatmap before its ReLU
        return ((peak * region).flatten(1).sum(1) / region.flatten(1).sum(1)).reshape(-1, 1)


class DLNetGradCAM(GradCAM):
    """MONAI Grad-CAM over a :class:`LocalizationScore`, giving the raw maps of several stages from one pass.

    MONAI's :class:`GradCAM` hooks every target layer on each pass but returns one layer per call; the maps of all
    layers come here from the same forward/backward pass, with MONAI's formula (``ReLU(sum_c w_c A_c)``, ``w_c`` the
    spatial mean of the gradient).
    """

    def __init__(self, network: nn.Module, settings: GradCAMSettings | None = None) -> None:
        self.settings = settings or GradCAMSettings()
        self.score_module = LocalizationScore(network, self.settings.target_layer, self.settings.score)
        names = tuple(f"network.{name}" for name in self.settings.layers)
        known = {name for name, _ in self.score_module.named_modules()}
        missing = [name[len("network."):] for name in names if name not in known]
        if missing:
            raise ValueError(f"the network has no module(s) {missing} to compute Grad-CAM at")
        # identity post-processing: MONAI's default normalizer maps (min, max) to (1, 0); normalization happens later
        super().__init__(
            nn_module=self.score_module, target_layers=names, postprocessing=lambda x: x  # type: ignore[arg-type]
        )

    def compute_maps(self, x: torch.Tensor, region: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Raw Grad-CAM maps ``[(B, 1, h_l, w_l), ...]`` (one per layer, at that layer's resolution), >= 0."""
        with torch.enable_grad():
            _, activations, gradients = self.nn_module(x, class_idx=0, region=region)
        if len(gradients) != len(activations):
            raise RuntimeError("Grad-CAM: a target layer got no gradient (is it on the path to the score?)")
        maps = []
        for acti, grad in zip(activations, gradients):
            b, c = grad.shape[:2]
            weights = grad.reshape(b, c, -1).mean(2).reshape(b, c, 1, 1)
            maps.append(F.relu((weights * acti).sum(1, keepdim=True)).detach())
        return maps


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array gives zeros (no structure to keep)."""
    low, high = float(array.min()), float(array.max())
    if high - low <= 1e-12:
        return np.zeros_like(array, dtype=np.float32)
    return ((array - low) / (high - low)).astype(np.float32)


def combine_cams(maps: Sequence[torch.Tensor | np.ndarray], image_shape: Sequence[int],
                 smooth_sigma: float = 0.01, normalize_each: bool = True) -> np.ndarray:
    """Resize each map ``(h, w)`` (or ``(1, 1, h, w)``) to ``image_shape`` (bilinear), scale each to [0, 1] by its
    maximum, take the pixel-wise max, smooth (Gaussian, sigma = ``smooth_sigma`` x shorter side) and min-max
    normalize. Returns ``(H, W)`` float32 in [0, 1] (all zeros when no map has any activation).
    """
    height, width = (int(s) for s in image_shape)
    combined = np.zeros((height, width), dtype=np.float32)
    for cam in maps:
        tensor = torch.as_tensor(np.asarray(cam) if not isinstance(cam, torch.Tensor) else cam, dtype=torch.float32)
        tensor = tensor.reshape(1, 1, *tensor.shape[-2:])
        resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
        resized = np.clip(resized, 0.0, None)
        if normalize_each:
            peak = float(resized.max())
            resized = resized / peak if peak > 0 else resized
        combined = np.maximum(combined, resized)
    if smooth_sigma > 0:
        combined = ndimage.gaussian_filter(combined, sigma=smooth_sigma * min(height, width), mode="nearest")
    return _scale_to_unit(combined)


def proposal_from_cam(cam: np.ndarray, box_mask: np.ndarray, threshold: float = 0.4,
                      edge_sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``(binary, soft)`` proposal from a combined map ``(H, W)`` in [0, 1] and a box mask ``(H, W)`` bool.

    ``binary = (cam >= threshold) & box_mask``; ``soft`` = ``binary`` Gaussian-blurred (sigma = ``edge_sigma`` x
    shorter side), then multiplied by ``box_mask`` (float32 in [0, 1], zero outside the boxes).
    """
    cam = np.asarray(cam, dtype=np.float32)
    box_mask = np.asarray(box_mask, dtype=bool)
    if cam.shape != box_mask.shape:
        raise ValueError(f"map {cam.shape} and box mask {box_mask.shape} differ in shape")
    binary = (cam >= threshold) & box_mask
    soft = binary.astype(np.float32)
    if edge_sigma > 0 and binary.any():
        soft = ndimage.gaussian_filter(soft, sigma=edge_sigma * min(cam.shape), mode="constant")
    soft = np.clip(soft * box_mask, 0.0, 1.0).astype(np.float32)
    return binary, soft


@dataclass
class Proposal:
    """One image's proposal, all arrays at the radiograph's size ``(H, W)``.

    Attributes:
        probability: DLNet's pneumonia probability of the image (sigmoid of the logit of the Grad-CAM pass).
        cam: the combined, smoothed, normalized Grad-CAM map, float32 in [0, 1] (before the threshold and the box).
        binary: the proposal region, bool: ``cam >= threshold`` inside the boxes.
        soft: the edge-blurred proposal, float32 in [0, 1], zero outside the boxes (the stage-2 training mask).
        box_mask: the boxes' union, bool.
        stage_maps: the raw per-layer Grad-CAM maps at their own resolution, keyed by layer name.
    """

    probability: float
    cam: np.ndarray
    binary: np.ndarray
    soft: np.ndarray
    box_mask: np.ndarray
    stage_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def area_fraction_of_box(self) -> float:
        """Proposal area / box area (0 when the box mask is empty)."""
        box_area = int(self.box_mask.sum())
        return float(self.binary.sum()) / box_area if box_area else 0.0


class GradCAMProposer:
    """Radiograph + boxes -> :class:`Proposal`, with DLNet's own preprocessing.

    Args:
        network: a DLNet (eval mode is set on every call; weights are not modified).
        image_size: the network's input size ``(H, W)`` (the checkpoint's ``image_size``).
        settings: :class:`GradCAMSettings`.
        device: where the network runs.
        clahe_clip_limit, clahe_tile_grid: the preprocessing settings of the training config.

    Typical use: ``dlnet = single_dlnet(load_bundle("bundles/dlnet")); GradCAMProposer(dlnet.network,
    dlnet.image_size)(pixels, boxes)`` (:func:`pneumonitor.networks.bundle.single_dlnet`: of an ensemble, such as the
    shipped DLNet, its localization member).
    The Grad-CAM hooks stay registered on ``network`` (MONAI's ``ModelWithHooks`` keeps no handles): build one
    proposer per network and reuse it (a server should not build one per request).
    """

    def __init__(
        self,
        network: nn.Module,
        image_size: Sequence[int] = (448, 448),
        settings: GradCAMSettings | None = None,
        device: str | torch.device = "cpu",
        clahe_clip_limit: float = 0.01,
        clahe_tile_grid: Sequence[int] | int = 8,
    ) -> None:
        from pneumonitor.transforms import dlnet_preprocess

        self.settings = settings or GradCAMSettings()
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if self.image_size[0] % 32 or self.image_size[1] % 32:
            raise ValueError(f"image_size must be multiples of 32 (DLNet's stride), got {self.image_size}")
        self.preprocess = dlnet_preprocess(self.image_size, clahe_clip_limit, clahe_tile_grid)
        self.cam = DLNetGradCAM(self.network, self.settings)

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """``(H, W)`` in [0, 1] -> ``(1, C, *image_size)`` network input on the device."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 2:
            raise ValueError(f"expected a 2-D radiograph, got shape {pixels.shape}")
        tensor = torch.as_tensor(np.asarray(self.preprocess(pixels[None])), dtype=torch.float32)
        return tensor[None].to(self.device)

    @torch.no_grad()
    def probability(self, pixels: np.ndarray) -> float:
        """DLNet's pneumonia probability of one radiograph ``(H, W)`` in [0, 1]."""
        logits, _ = self.network(self.prepare(pixels))
        return float(torch.sigmoid(logits[0, 0]))

    def __call__(self, pixels: np.ndarray, boxes: Sequence[Sequence[float]]) -> Proposal:
        """The proposal of one radiograph ``(H, W)`` in [0, 1] for its ``boxes`` (pixels, end-exclusive)."""
        pixels = np.asarray(pixels, dtype=np.float32)
        x = self.prepare(pixels)
        image_shape = pixels.shape
        map_shape = (self.image_size[0] // 8, self.image_size[1] // 8)
        region = torch.from_numpy(boxes_to_map(boxes, image_shape, map_shape).astype(np.float32))[None, None]
        maps = self.cam.compute_maps(x, region.to(self.device))
        logits = self.cam.score_module.last_logits
        probability = float(torch.sigmoid(logits[0, 0])) if logits is not None else float("nan")
        s = self.settings
        cam = combine_cams([m[0, 0].cpu() for m in maps], image_shape, s.smooth_sigma, s.normalize_each)
        box_mask = boxes_to_mask([list(b) for b in boxes], image_shape)
        binary, soft = proposal_from_cam(cam, box_mask, s.threshold, s.edge_sigma)
        stage_maps = {name: m[0, 0].cpu().numpy() for name, m in zip(s.layers, maps)}
        return Proposal(probability=probability, cam=cam, binary=binary, soft=soft, box_mask=box_mask,
                        stage_maps=stage_maps)
