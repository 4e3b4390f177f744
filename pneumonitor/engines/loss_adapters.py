"""Losses in the form MONAI's engines call them.

- :class:`DLNetEngineLoss` is :class:`pneumonitor.networks.DLNetLoss` with the engine's ``(pred, targets)`` signature;
- :class:`MaskedBinaryDiceLoss` (LSNet): Dice loss that skips pixels with the ignore label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.losses import MaskedDiceLoss
from torch import nn

from pneumonitor.networks.losses import DLNetLoss

__all__ = ["DLNetEngineLoss", "MaskedBinaryDiceLoss"]


class DLNetEngineLoss(nn.Module):
    """:class:`DLNetLoss` called as MONAI's engines call a loss: ``loss(pred=(logits, maps), targets=dict)``.

    Args: those of :class:`DLNetLoss`. ``last_terms`` holds the last call's unweighted terms (for the training log).
    """

    def __init__(self, localization_weight: float = 1e-5, mse_reduction: str = "sum", pos_weight: float | None = None,
                 supervise: str = "maps", outside_lung_weight: float = 0.0, extent_weight: float = 0.0):
        super().__init__()
        self.loss = DLNetLoss(localization_weight=localization_weight, mse_reduction=mse_reduction,
                              pos_weight=pos_weight, supervise=supervise, outside_lung_weight=outside_lung_weight,
                              extent_weight=extent_weight)

    @property
    def last_terms(self) -> dict[str, float]:
        return self.loss.last_terms

    def forward(self, pred: Sequence[torch.Tensor], targets: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        logits, maps = pred[0], pred[1]
        return self.loss(logits, maps, targets["label"], targets.get("target"), targets.get("has_target"),
                         targets.get("lung"), targets.get("has_lung"), targets.get("extent"))


class MaskedBinaryDiceLoss(nn.Module):
    """Dice loss on sigmoid(logits) that ignores pixels whose target equals ``ignore_label``.

    Input logits ``(B, 1, H, W)``; target ``(B, 1, H, W)`` with 0/1 and possibly ``ignore_label`` (e.g. the V7 masks'
    "ignore" pixels). Extra keyword arguments go to MONAI's ``DiceLoss`` (through ``MaskedDiceLoss``).
    """

    def __init__(self, ignore_label: float = -1.0, **dice_kwargs: Any) -> None:
        super().__init__()
        self.ignore_label = float(ignore_label)
        self.dice = MaskedDiceLoss(sigmoid=True, **dice_kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_label).to(logits.dtype)
        return self.dice(logits, (target * valid).clamp(0, 1), mask=valid)
