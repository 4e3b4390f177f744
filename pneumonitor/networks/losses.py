"""DLNet's training loss (Sec. III-A): ``BCE(label) + lambda * MSE(maps, target)``.

The paper gives lambda = 1e-5, which only makes sense with a *summed* squared error: with 128 maps of 56x56 at
448 px there are 401,408 terms per image, so at initialization (maps ~0.1-1 against a mostly-zero target) the summed
term is of order 1e3-1e5 and lambda brings it to 0.01-1, the scale of the BCE (0.69 at start). Defaults follow that
reading: per image, the squared error is summed over maps and pixels; images are then averaged. With
``mse_reduction="mean"`` the squared error is averaged over elements instead (use lambda ~1 then).

The target (one channel, values in [0, 1]) is broadcast over the maps and resized (area) to the maps' resolution.
Images without a localization target (``has_target == 0``) get the classification term only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DLNetLoss"]


class DLNetLoss(nn.Module):
    """Args:
    localization_weight: lambda (paper: 1e-5).
    mse_reduction: ``"sum"`` (paper's reading) or ``"mean"`` over the maps and pixels of one image.
    pos_weight: optional BCE weight of positives (class imbalance).
    """

    def __init__(self, localization_weight: float = 1e-5, mse_reduction: str = "sum", pos_weight: float | None = None):
        super().__init__()
        if mse_reduction not in ("sum", "mean"):
            raise ValueError(f"mse_reduction must be 'sum' or 'mean', got {mse_reduction!r}")
        self.localization_weight = float(localization_weight)
        self.mse_reduction = mse_reduction
        self.pos_weight = None if pos_weight is None else torch.tensor([float(pos_weight)])
        self.last_terms: dict[str, float] = {}

    def forward(
        self,
        logits: torch.Tensor,
        maps: torch.Tensor,
        label: torch.Tensor,
        target: torch.Tensor | None = None,
        has_target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            logits: ``(B, 1)``; maps: ``(B, M, h, w)``; label: ``(B,)`` or ``(B, 1)`` in {0, 1};
            target: ``(B, 1, H, W)`` in [0, 1] or None; has_target: ``(B,)`` 0/1 (default: all 1 when target given).
        Returns the scalar loss; ``last_terms`` keeps the two terms (unweighted) for logging.
        """
        label = label.reshape(-1, 1).to(logits.dtype)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, label, pos_weight=pos_weight)
        loss = bce
        mse_value = 0.0
        if target is not None and self.localization_weight > 0:
            target = target.to(maps.dtype)
            if target.shape[-2:] != maps.shape[-2:]:
                target = F.interpolate(target, size=maps.shape[-2:], mode="area")
            squared = (maps - target).pow(2).flatten(1)
            per_image = squared.sum(1) if self.mse_reduction == "sum" else squared.mean(1)
            weight = (
                torch.ones_like(per_image) if has_target is None else has_target.reshape(-1).to(per_image.dtype)
            )
            mse = (per_image * weight).sum() / weight.sum().clamp(min=1.0)
            loss = loss + self.localization_weight * mse
            mse_value = float(mse.detach())
        self.last_terms = {"bce": float(bce.detach()), "mse": mse_value}
        return loss
