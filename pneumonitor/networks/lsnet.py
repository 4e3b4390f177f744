"""LSNet: lung segmentation U-Net with a VGG-19 encoder (Amer et al. 2020, Sec. IV-A, Table III).

Encoder = the 16 convolutions of VGG-19 in 5 stages (64x2, 128x2, 256x4, 512x4, 512x4), max-pooling between stages.
The skips are the outputs of stages 1-4 (strides 1, 2, 4, 8); stage 5 (stride 16) is the bridge. The decoder mirrors
stages 4..1: transposed convolution x2, concatenation with the skip, two 3x3 conv + norm + ReLU. A 1x1 convolution
gives one logit per pixel (lungs vs background; sigmoid + threshold for the binary mask).

``width`` multiplies every channel count so that a lighter variant trains on a CPU (width 0.25 has 1/16 of the
FLOPs). BatchNorm after each convolution is on by default: without ImageNet weights (none can be downloaded here)
the plain VGG trains poorly from scratch; set ``norm=None`` for the exact VGG-19 layer set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["LSNet", "VGG19_STAGES"]

#: (channels, convolutions) per VGG-19 stage
VGG19_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def _conv_block(in_channels: int, out_channels: int, convs: int, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(convs):
        layers.append(nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm == "instance":
            layers.append(nn.InstanceNorm2d(out_channels, affine=True))
        elif norm is not None:
            raise ValueError(f"norm must be 'batch', 'instance' or None, got {norm!r}")
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LSNet(nn.Module):
    """VGG-19 U-Net.

    Args:
        in_channels: input channels (1: the radiograph standardized by its own mean/std).
        out_channels: output logits per pixel (1: lungs).
        width: channel multiplier (1.0 = VGG-19).
        norm: ``"batch"``, ``"instance"`` or ``None``.
        decoder_convs: 3x3 convolutions per decoder stage.

    Input ``(B, in_channels, H, W)`` with H, W multiples of 16; output logits ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: float = 1.0,
        norm: str | None = "batch",
        decoder_convs: int = 2,
    ) -> None:
        super().__init__()
        channels = [max(4, int(round(c * width))) for c, _ in VGG19_STAGES]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for (_, convs), ch in zip(VGG19_STAGES, channels):
            self.encoder.append(_conv_block(previous, ch, convs, norm))
            previous = ch
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for skip_channels in reversed(channels[:-1]):
            self.upsample.append(nn.ConvTranspose2d(previous, skip_channels, kernel_size=2, stride=2))
            self.decoder.append(_conv_block(2 * skip_channels, skip_channels, decoder_convs, norm))
            previous = skip_channels
        self.head = nn.Conv2d(previous, out_channels, kernel_size=1)
        self.config: dict[str, Any] = {
            "name": "LSNet",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "width": width,
            "norm": norm,
            "decoder_convs": decoder_convs,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for index, stage in enumerate(self.encoder):
            if index > 0:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        for up, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Lung probability ``(B, out_channels, H, W)`` in [0, 1]."""
        return torch.sigmoid(self(x))
