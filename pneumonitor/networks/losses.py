"""DLNet's training loss (Sec. III-A): ``BCE(label) + lambda * MSE(maps, target)``, plus weak localization terms.

**The paper's term** (``supervise="maps"``): each of the 128 maps regresses the target. lambda = 1e-5 only makes
sense with a *summed* squared error: with 128 maps of 56x56 at 448 px there are 401,408 terms per image, so the summed
term is of order 1e3-1e5 and lambda brings it to the scale of the BCE. ``mse_reduction="mean"`` averages instead.

**The heatmap the pipeline uses** (``supervise="heatmap"``): inference thresholds the per-pixel maximum over the maps
(:func:`pneumonitor.networks.dlnet.maps_to_heatmap`), so this mode regresses that maximum, clipped to [0, 1], on the
target (the lesion's area fraction per map cell, :mod:`pneumonitor.transforms.targets`): a threshold on the heatmap
is then a threshold on a covered fraction. Regressing each map separately lets their maximum exceed the target
everywhere (43 % of lung pixels above 1.0 in the weights trained that way).

**Weak terms** for positives whose lesions are not outlined (most COVID-19 and NIH pneumonia images), each on the
clipped heatmap ``H`` and the item's lung area fractions ``L`` per cell (:class:`LocalizationTargetd`):

* ``outside_lung_weight``: mean over cells of ``(H * (1 - L))^2`` -- no heatmap outside the lungs;
* ``extent_weight``: an expert's 0-8 geographic extent ``T`` says how much of the lungs is involved:
  ``(sum(H * L) / sum(L) - involvement(T))^2`` with :func:`pneumonitor.severity.involvement_from_score`.

Images without a localization target (``has_target == 0``) get no target term; items without lungs
(``has_lung == 0``) no weak term; items without a score (``extent < 0``) no extent term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumonitor.networks.dlnet import maps_to_heatmap
from pneumonitor.severity import involvement_from_score

__all__ = ["DLNetLoss"]


class DLNetLoss(nn.Module):
    """Args:
    localization_weight: lambda (paper: 1e-5 with summed maps).
    mse_reduction: ``"sum"`` (paper's reading) or ``"mean"`` over the maps/cells of one image.
    pos_weight: optional BCE weight of positives (class imbalance).
    supervise: ``"maps"`` (paper: every map regresses the target) or ``"heatmap"`` (their clipped maximum).
    outside_lung_weight, extent_weight: weights of the weak terms (0 = off, the paper's loss).
    """

    def __init__(
        self,
        localization_weight: float = 1e-5,
        mse_reduction: str = "sum",
        pos_weight: float | None = None,
        supervise: str = "maps",
        outside_lung_weight: float = 0.0,
        extent_weight: float = 0.0,
    ):
        super().__init__()
        if mse_reduction not in ("sum", "mean"):
            raise ValueError(f"mse_reduction must be 'sum' or 'mean', got {mse_reduction!r}")
        if supervise not in ("maps", "heatmap"):
            raise ValueError(f"supervise must be 'maps' or 'heatmap', got {supervise!r}")
        self.localization_weight = float(localization_weight)
        self.mse_reduction = mse_reduction
        self.supervise = supervise
        self.outside_lung_weight = float(outside_lung_weight)
        self.extent_weight = float(extent_weight)
        self.pos_weight = None if pos_weight is None else torch.tensor([float(pos_weight)])
        self.last_terms: dict[str, float] = {}

    @staticmethod
    def _masked_mean(per_image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (per_image * weight).sum() / weight.sum().clamp(min=1.0)

    def forward(
        self,
        logits: torch.Tensor,
        maps: torch.Tensor,
        label: torch.Tensor,
        target: torch.Tensor | None = None,
        has_target: torch.Tensor | None = None,
        lung: torch.Tensor | None = None,
        has_lung: torch.Tensor | None = None,
        extent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            logits: ``(B, 1)``; maps: ``(B, M, h, w)``; label: ``(B,)`` or ``(B, 1)`` in {0, 1};
            target: ``(B, 1, H, W)`` in [0, 1] or None; has_target: ``(B,)`` 0/1 (default: all 1 when target given);
            lung: ``(B, 1, h, w)`` lung area fractions or None; has_lung: ``(B,)`` 0/1; extent: ``(B,)`` 0-8, < 0
            unknown.
        Returns the scalar loss; ``last_terms`` keeps the terms (unweighted) for logging.
        """
        # every input on the maps' device: a decollated evaluator item rebuilds 0-d targets (has_target, extent) as
        # CPU tensors while the network's outputs stay on the GPU
        device = maps.device
        target, has_target, lung, has_lung, extent = (
            None if t is None else torch.as_tensor(t).to(device) for t in (target, has_target, lung, has_lung, extent)
        )
        label = torch.as_tensor(label).to(device).reshape(-1, 1).to(logits.dtype)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, label, pos_weight=pos_weight)
        loss = bce
        terms = {"bce": float(bce.detach()), "mse": 0.0}
        batch = maps.shape[0]
        heatmap = maps_to_heatmap(maps)  # what inference thresholds: the clipped per-pixel maximum
        if target is not None and self.localization_weight > 0:
            target = target.to(maps.dtype)
            if target.shape[-2:] != maps.shape[-2:]:
                target = F.interpolate(target, size=maps.shape[-2:], mode="area")
            predicted = heatmap if self.supervise == "heatmap" else maps
            squared = (predicted - target).pow(2).flatten(1)
            per_image = squared.sum(1) if self.mse_reduction == "sum" else squared.mean(1)
            weight = torch.ones_like(per_image) if has_target is None else has_target.reshape(-1).to(per_image.dtype)
            mse = self._masked_mean(per_image, weight)
            loss = loss + self.localization_weight * mse
            terms["mse"] = float(mse.detach())
        if lung is not None and has_lung is not None and (self.outside_lung_weight > 0 or self.extent_weight > 0):
            lung = lung.to(maps.dtype)
            if lung.shape[-2:] != maps.shape[-2:]:
                lung = F.interpolate(lung, size=maps.shape[-2:], mode="area")
            unknown = torch.ones(batch, device=maps.device) if has_target is None else 1.0 - has_target.reshape(-1)
            weak = has_lung.reshape(-1).to(maps.dtype) * unknown.to(maps.dtype)
            if self.outside_lung_weight > 0:
                outside = (heatmap * (1.0 - lung)).pow(2).flatten(1).mean(1)
                term = self._masked_mean(outside, weak)
                loss = loss + self.outside_lung_weight * term
                terms["outside_lung"] = float(term.detach())
            if self.extent_weight > 0 and extent is not None:
                extent = extent.reshape(-1).to(maps.dtype)
                scored = weak * (extent >= 0).to(maps.dtype)
                coverage = (heatmap * lung).flatten(1).sum(1) / lung.flatten(1).sum(1).clamp(min=1e-6)
                expected = involvement_from_score(extent.clamp(min=0.0)) / 100.0
                term = self._masked_mean((coverage - expected).pow(2), scored)
                loss = loss + self.extent_weight * term
                terms["extent"] = float(term.detach())
        self.last_terms = terms
        return loss
