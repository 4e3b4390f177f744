"""Several trained DLNets as one: their pneumonia probabilities averaged, one member's heatmap and extent head.

Why: the two DLNets trained here see different things. The CPU recipe (ResNet-18 at 224 px, 27 epochs) has the
better extent head and overall AUC; the paper configuration trained on a GPU (ResNet-50 at 448 px) separates the
NIH adult radiographs far better (validation NIH AUC 0.78 vs 0.68). The mean of their probabilities keeps both
(validation AUC 0.934, NIH 0.75; docs/bundles.md, "Ensembles"). A member may have probability weight 0: the
shipped 0.6.0 keeps the 224-px DLNet only for its heatmap and extent head (the better head on validation) and takes
the probability from its 320-px continuation and the ResNet-50.

The ensemble takes the largest member's input (``image_size`` of the bundle); a member trained at a smaller size gets
that input area-averaged to its size. This is not its own preprocessing (CLAHE runs at the bundle's size, before the
resize): measured on the 762 validation images, the 224-px member's AUC went 0.928 -> 0.922 this way.

``kind`` is ``"DLNet"``: :func:`pneumonitor.networks.load_bundle` hands it to every caller that asks for a DLNet,
and it answers as one (``forward`` -> ``(logits, maps)``, ``outputs`` -> ``(logits, maps, read_out)``). What needs a
single network's layers (Grad-CAM proposals, ``fit-extent-head``) refuses it: fit each member's head before combining
(:func:`combine_dlnet_bundles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DLNetEnsemble"]


def _logit(probability: torch.Tensor) -> torch.Tensor:
    """The logit of the ensemble's mean probability, kept finite (a member's sigmoid can saturate at 0 or 1)."""
    return torch.logit(probability.clamp(1e-6, 1.0 - 1e-6))


class DLNetEnsemble(nn.Module):
    """Mean-probability ensemble of trained DLNets.

    Args:
        members: the DLNets (built from their ``network_def``; :func:`pneumonitor.networks.bundle.build_network`
            builds nested definitions).
        input_sizes: each member's training input size ``(h, w)``; the ensemble's input is the largest.
        member_weights: weights of the members' probabilities (normalised; default equal).
        localization_member: the member whose maps (heatmap) and extent head the ensemble returns.

    ``forward(x)`` -> ``(logits (B, 1), maps)``: the logit of the weighted mean probability, the localization
    member's maps; ``outputs(x)`` adds that member's extent-head read-out (``None`` without a head).
    """

    kind = "DLNet"

    def __init__(
        self,
        members: Sequence[nn.Module],
        input_sizes: Sequence[Sequence[int]],
        member_weights: Sequence[float] | None = None,
        localization_member: int = 0,
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        if len(input_sizes) != len(members):
            raise ValueError(f"{len(members)} members but {len(input_sizes)} input sizes")
        weights = [1.0] * len(members) if member_weights is None else [float(w) for w in member_weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"member_weights must be {len(members)} non-negative numbers with a positive sum")
        if not 0 <= int(localization_member) < len(members):
            raise ValueError(f"localization_member {localization_member} is not a member index")
        self.members = nn.ModuleList(members)
        self.input_sizes: List[List[int]] = [[int(s) for s in size] for size in input_sizes]
        self.member_weights: List[float] = [w / sum(weights) for w in weights]
        self.localization_member = int(localization_member)
        #: the localization member's extent-head channels (:attr:`pneumonitor.networks.DLNet.read_out_channels`)
        self.read_out_channels: int = int(members[self.localization_member].read_out_channels)
        self.config: dict[str, Any] = {
            "name": "DLNetEnsemble",
            "members": [dict(getattr(m, "config", {})) for m in members],
            "input_sizes": self.input_sizes,
            "member_weights": self.member_weights,
            "localization_member": self.localization_member,
        }

    def _member_input(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The ensemble's input area-averaged to member ``index``'s size (as it is when that is the size)."""
        size = self.input_sizes[index]
        if x.shape[-2] != size[0] or x.shape[-1] != size[1]:
            return F.interpolate(x, size=[size[0], size[1]], mode="area")
        return x

    def _combine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        probability = torch.zeros(x.shape[0], 1, device=x.device, dtype=torch.float32)
        maps: Optional[torch.Tensor] = None
        read_out: Optional[torch.Tensor] = None
        for index, member in enumerate(self.members):
            member_input = self._member_input(x, index)
            if index == self.localization_member:
                logits, maps, read_out = member.outputs(member_input)
            else:  # only its classification: its localization head would be computed for nothing
                logits = member.classify(member_input)
            probability = probability + self.member_weights[index] * torch.sigmoid(logits.float())
        assert maps is not None
        return _logit(probability), maps, read_out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps, _ = self._combine(x)
        return logits, maps

    def classification_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's stride-32 features of its input (:meth:`pneumonitor.networks.DLNet.classification_features`):
        MC-dropout runs the backbones once and :meth:`classify_features` per sample."""
        return [member.stage_outputs(self._member_input(x, index))[2] for index, member in enumerate(self.members)]

    def classify_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The logit of the weighted mean probability of the members' classification heads on ``features``."""
        probability = sum(weight * torch.sigmoid(member.classification_head(f).float())
                          for weight, member, f in zip(self.member_weights, self.members, features))
        return _logit(probability)

    @torch.jit.export  # the Deploy app runs the TorchScript export: it needs this method, not only forward
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(logits, maps, read_out)``: :meth:`forward`'s outputs and the localization member's extent-head maps."""
        return self._combine(x)
