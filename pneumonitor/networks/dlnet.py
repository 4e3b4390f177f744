"""DLNet: pneumonia detection and localization (Amer et al. 2020, Sec. III-A, Fig. 2).

A ResNet backbone (ResNet-50 in the paper; MONAI's 2-D ResNet, so no torchvision) feeds two heads:

- :class:`ClassificationHead`: global average pooling of the last stage -> dense 1024 -> ReLU -> dropout ->
  dense 256 -> ReLU -> dense 1 (a logit; sigmoid gives the pneumonia probability).
- :class:`LocalizationHead`: FPN-like top-down path over the stride-32 ("Act-14" at 448 px), stride-16 ("Act-28")
  and stride-8 ("Act-56") stage outputs, ending in a 3x3 convolution to 128 maps + ReLU at stride 8 (the paper), or
  + sigmoid (``localization_activation="sigmoid"``: maps in (0, 1) whose maximum regresses an area fraction, and
  which never go dead the way ReLU maps pushed to 0 on negatives do).

The inference heatmap is the per-pixel maximum over the 128 maps, clipped to [0, 1] and resized to the input
(:func:`maps_to_heatmap`).

Beyond the paper, an optional :class:`ExtentHead` (``extent_head=True``): a 1x1 convolution over the stride-16 stage
whose **mean over a lung is that lung's expert geographic extent (0-4)**. Being linear, its lung mean equals a linear
model of the lung-pooled features, which :mod:`pneumonitor.engines.extent_head` fits to expert scores after training
(ridge regression; the heatmap's area never learnt to mean anything, see the DLNet card). With
``lung_classifier=True`` it has two more channels whose means over the right and the left lung add up to a
pneumonia logit: a classifier that only looks at the lungs (logistic regression on the same lung-pooled features).
``forward`` does not run it (training is unchanged); :meth:`DLNet.outputs` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet
from torch import nn

__all__ = ["DLNet", "ClassificationHead", "LocalizationHead", "ExtentHead", "maps_to_heatmap", "RESNET_LAYERS",
           "LOCALIZATION_ACTIVATIONS"]

#: the localization head's output activation (no parameters: the weights alone cannot tell, the bundle config does)
LOCALIZATION_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}

#: blocks per stage and block type of each supported backbone (He et al. 2016)
RESNET_LAYERS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class ClassificationHead(nn.Module):
    """Global average pool -> dense layers -> 1 logit.

    Args:
        in_channels: channels of the last backbone stage (2048 for ResNet-50).
        dense_units: widths of the hidden dense layers (paper: 1024, 256); dropout follows the first.
        dropout: dropout probability between the first two dense layers (the paper does not give it; 0.5).

    Input ``(B, in_channels, h, w)``; output ``(B, 1)`` logits.
    """

    def __init__(self, in_channels: int, dense_units: Sequence[int] = (1024, 256), dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        width = in_channels
        for index, units in enumerate(dense_units):
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            if index == 0:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class LocalizationHead(nn.Module):
    """FPN-like top-down localization head.

    ``x = up2(reduce_32(C32)) + lateral_16(C16)``; ``x = up2(reduce_16(x)) + lateral_8(C8)``;
    ``maps = ReLU(conv3x3(x))``. The paper upsamples before the 1x1 reduction; with nearest upsampling a 1x1
    convolution commutes with it, so reducing first gives the same output at a quarter of the cost.

    Args:
        in_channels: channels of the stride-8, stride-16 and stride-32 stage outputs.
        fpn_channels: channels of the top-down path.
        maps: number of output maps (paper: 128).
        activation: ``"relu"`` (paper) or ``"sigmoid"``.

    Input: the three stage outputs; output ``(B, maps, H/8, W/8)``, non-negative.
    """

    def __init__(
        self, in_channels: Sequence[int], fpn_channels: int = 256, maps: int = 128, activation: str = "relu"
    ) -> None:
        super().__init__()
        c8, c16, c32 = in_channels
        self.reduce_32 = nn.Conv2d(c32, fpn_channels, kernel_size=1)
        self.lateral_16 = nn.Conv2d(c16, fpn_channels, kernel_size=1)
        self.reduce_16 = nn.Conv2d(fpn_channels, fpn_channels, kernel_size=1)
        self.lateral_8 = nn.Conv2d(c8, fpn_channels, kernel_size=1)
        self.output_conv = nn.Conv2d(fpn_channels, maps, kernel_size=3, padding=1)
        if activation not in LOCALIZATION_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(LOCALIZATION_ACTIVATIONS)}, got {activation!r}")
        self.output_act = LOCALIZATION_ACTIVATIONS[activation]()

    def forward(self, c8: torch.Tensor, c16: torch.Tensor, c32: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce_32(c32), size=c16.shape[-2:], mode="nearest") + self.lateral_16(c16)
        x = F.interpolate(self.reduce_16(x), size=c8.shape[-2:], mode="nearest") + self.lateral_8(c8)
        return self.output_act(self.output_conv(x))


class ExtentHead(nn.Module):
    """Lung read-out maps: a 1x1 convolution of the stride-16 stage output, unbounded.

    Channel 0: its mean over a lung's cells (weighted by the lung's area in each cell) is the lung's extent on the
    expert 0-4 scale; because the head is linear, that mean is ``w . mean_lung(features) + b``, the model
    :mod:`pneumonitor.engines.extent_head` fits. With ``lung_classifier``, channels 1 and 2: the pneumonia logit is
    channel 1's mean over the right lung plus channel 2's over the left lung. Input ``(B, in_channels, H/16, W/16)``;
    output ``(B, 1 or 3, H/16, W/16)``.
    """

    def __init__(self, in_channels: int, lung_classifier: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3 if lung_classifier else 1, kernel_size=1)

    def forward(self, c16: torch.Tensor) -> torch.Tensor:
        return self.conv(c16)


def maps_to_heatmap(maps: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Heatmap = per-pixel max over the localization maps, clipped to [0, 1], optionally resized (bilinear).

    ``(B, M, h, w)`` -> ``(B, 1, *size)``. The clip makes a threshold a fraction of something for ReLU maps too
    (trained towards [0, 1] targets, their maximum can exceed 1); thresholds below 1 select the same pixels.
    """
    heatmap = maps.amax(dim=1, keepdim=True).clamp(0.0, 1.0)
    if size is not None and tuple(heatmap.shape[-2:]) != tuple(size):
        heatmap = F.interpolate(heatmap, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return heatmap


class DLNet(nn.Module):
    """Detection + localization network.

    Args:
        backbone: ``resnet18|34|50|101|152`` (paper: ``resnet50``).
        in_channels: input channels (3: gray replicated, ImageNet-normalized).
        dense_units, dropout: :class:`ClassificationHead` settings.
        fpn_channels, localization_maps, localization_activation: :class:`LocalizationHead` settings.
        extent_head: add an :class:`ExtentHead` (fitted after training; absent in the paper).
        lung_classifier: give the extent head the two lung-classifier channels (needs ``extent_head``).

    ``forward(x)`` with ``x`` ``(B, in_channels, H, W)`` (H, W multiples of 32) returns ``(logits, maps)``:
    logits ``(B, 1)`` and maps ``(B, localization_maps, H/8, W/8)``. :meth:`predict` gives probability and heatmap.
    The stage outputs are ``backbone.layer2`` (stride 8), ``backbone.layer3`` (stride 16, "Act-28") and
    ``backbone.layer4`` (stride 32, "Act-14"); Grad-CAM hooks those module names.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 3,
        dense_units: Sequence[int] = (1024, 256),
        dropout: float = 0.5,
        fpn_channels: int = 256,
        localization_maps: int = 128,
        localization_activation: str = "relu",
        extent_head: bool = False,
        lung_classifier: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in RESNET_LAYERS:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(RESNET_LAYERS)}")
        block, layers = RESNET_LAYERS[backbone]
        # MONAI's ResNet defaults to a stride-1 stem; stride 2 + max-pool gives the ImageNet ResNet's strides 4..32.
        self.backbone = resnet.ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=resnet.get_inplanes(),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
            num_classes=1,
        )
        expansion = 4 if block == "bottleneck" else 1
        stage_channels = [c * expansion for c in resnet.get_inplanes()]  # 64, 128, 256, 512 (x4 for bottleneck)
        self.classification_head = ClassificationHead(stage_channels[3], dense_units=dense_units, dropout=dropout)
        self.localization_head = LocalizationHead(
            stage_channels[1:], fpn_channels=fpn_channels, maps=localization_maps, activation=localization_activation
        )
        # created last, so the other layers draw the same initial weights with and without it
        if lung_classifier and not extent_head:
            raise ValueError("lung_classifier is a part of the extent head: set extent_head too")
        self.extent_head = ExtentHead(stage_channels[2], lung_classifier) if extent_head else None
        if self.extent_head is not None:
            # fitted after training (pneumonitor.engines.extent_head), never by backprop: frozen, so training with it
            # in the network (the bundle's train.json) leaves it as loaded and DDP finds no unused trainable parameter
            self.extent_head.requires_grad_(False)
        #: the extent head's channels (0 none, 1 extent, 3 with the lung classifier): an int attribute, so that the
        #: TorchScript export answers it too (pneumonitor.inference.analyzer asks before using the head)
        self.read_out_channels: int = (3 if lung_classifier else 1) if extent_head else 0
        self.config: dict[str, Any] = {
            "name": "DLNet",
            "backbone": backbone,
            "in_channels": in_channels,
            "dense_units": list(dense_units),
            "dropout": dropout,
            "fpn_channels": fpn_channels,
            "localization_maps": localization_maps,
            "localization_activation": localization_activation,
            "extent_head": bool(extent_head),
            "lung_classifier": bool(lung_classifier),
        }

    def stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone features at strides 8, 16 and 32."""
        b = self.backbone
        x = b.act(b.bn1(b.conv1(x)))
        if not b.no_max_pool:
            x = b.maxpool(x)
        c8 = b.layer2(b.layer1(x))
        c16 = b.layer3(c8)
        c32 = b.layer4(c16)
        return c8, c16, c32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c8, c16, c32 = self.stage_outputs(x)
        return self.classification_head(c32), self.localization_head(c8, c16, c32)

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classification logits ``(B, 1)`` alone (no localization head): an ensemble's other members."""
        return self.classification_head(self.stage_outputs(x)[2])

    def classification_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What the classification head reads (the stride-32 features), as a list (an ensemble has one per member):
        MC-dropout runs the backbone once and :meth:`classify_features` per sample."""
        return [self.stage_outputs(x)[2]]

    def classify_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The classification logits ``(B, 1)`` of :meth:`classification_features`' output."""
        return self.classification_head(features[0])

    @torch.jit.export  # the Deploy app runs the TorchScript export: it needs this method, not only forward
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(logits, maps, extent)`` in one pass: ``forward``'s outputs and the :class:`ExtentHead`'s maps
        ``(B, 1 or 3, H/16, W/16)`` (``None`` without the head)."""
        c8, c16, c32 = self.stage_outputs(x)
        extent: Optional[torch.Tensor] = None
        if self.extent_head is not None:
            extent = self.extent_head(c16)
        return self.classification_head(c32), self.localization_head(c8, c16, c32), extent

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probability ``(B,)`` in [0, 1] and heatmap ``(B, 1, H, W)`` at the input size."""
        logits, maps = self(x)
        return torch.sigmoid(logits[:, 0]), maps_to_heatmap(maps, x.shape[-2:])
