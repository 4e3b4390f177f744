"""Post-processing of network outputs in the bundles' evaluators and inference.

- :class:`DLNetOutputd` turns one decollated DLNet evaluator item into ``pred`` (probability), ``heatmap``, ``label``
  and the item's loss (the validation loss that drives ``ReduceLROnPlateau``);
- :class:`SelectOutput`: one output of a multi-output network (for MONAI's ``verify_net_in_out``);
- :class:`ExcludeIgnoredd` (LSNet): the ignore-label exclusion for the Dice/Jaccard metrics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import nn

from pneumonitor.engines.batches import DLNetPrepareBatch
from pneumonitor.engines.loss_adapters import DLNetEngineLoss
from pneumonitor.networks.dlnet import maps_to_heatmap
from pneumonitor.networks.losses import DLNetLoss

__all__ = ["DLNetOutputd", "SelectOutput", "ExcludeIgnoredd"]


class DLNetOutputd(MapTransform):
    """Post-processing of one decollated DLNet evaluator/inference item.

    Input keys: ``pred`` = ``[logit (1,), maps (M, h, w)]`` (the decollated network output), ``label`` = the
    targets dict of :class:`DLNetPrepareBatch` (or a plain label). Output keys:

    - ``pred``: pneumonia probability ``(1,)`` in [0, 1];
    - ``heatmap``: per-pixel max over the maps ``(1, h, w)``, or resized (bilinear) to ``heatmap_size``;
    - ``label`` ``(1,)``, ``target`` ``(1, h, w)``, ``has_target`` ``()`` when the targets were given;
    - ``truth_region``: the item's ``region`` (binary truth at the maps' size), NaN when ``has_target`` is 0;
    - ``loss``: the item's :class:`DLNetLoss` value ``()`` when ``loss`` is given and targets exist;
    - ``maps`` is dropped unless ``keep_maps``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        heatmap_key: str = "heatmap",
        label_key: str = "label",
        heatmap_size: Sequence[int] | None = None,
        loss: DLNetEngineLoss | DLNetLoss | None = None,
        loss_key: str = "loss",
        keep_maps: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.heatmap_key, self.label_key, self.loss_key = heatmap_key, label_key, loss_key
        self.heatmap_size = None if heatmap_size is None else tuple(int(s) for s in heatmap_size)
        self.loss = loss.loss if isinstance(loss, DLNetEngineLoss) else loss
        self.keep_maps = keep_maps

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            logit, maps = d[key][0], d[key][1]
            d[key] = torch.sigmoid(logit.reshape(1).float())
            d[self.heatmap_key] = maps_to_heatmap(maps[None].float(), self.heatmap_size)[0]
            targets = d.get(self.label_key)
            if isinstance(targets, Mapping) and targets.get("label") is None:
                d.pop(self.label_key)  # inference: nothing to compare with
            elif isinstance(targets, Mapping):
                d[self.label_key] = torch.as_tensor(targets["label"]).reshape(1).float()
                target, has_target = targets.get("target"), targets.get("has_target")
                # decollation turns 0-d tensors into Python numbers
                has_target = None if has_target is None else torch.as_tensor(has_target, dtype=torch.float32)
                if target is not None:
                    d["target"], d["has_target"] = target, has_target
                    if "region" in d:
                        # a new key: MONAI's engines keep only new keys (and the output's own) in the output
                        region = torch.as_tensor(d["region"], dtype=torch.float32)
                        if float(has_target) == 0:  # unknown location: the heatmap-threshold sweep skips NaN regions
                            region = torch.full_like(region, float("nan"))
                        d["truth_region"] = region
                if self.loss is not None:
                    weak = {key: None if targets.get(key) is None else torch.as_tensor(targets[key]).float()[None]
                            for key in DLNetPrepareBatch.WEAK_KEYS}
                    with torch.no_grad():
                        value = self.loss(
                            logit.reshape(1, 1).float(), maps[None].float(), d[self.label_key],
                            None if target is None else target[None], None if target is None else has_target.reshape(1),
                            weak["lung"], weak["has_lung"], weak["extent"],
                        )
                    d[self.loss_key] = value.detach().reshape(())
            if self.keep_maps:
                d["maps"] = maps
        return d


class SelectOutput(nn.Module):
    """``network(x)[index]``: one output of a multi-output network (DLNet gives ``(logits, maps)``).

    MONAI's ``verify_net_in_out`` checks a single output tensor; the DLNet bundle verifies the classification output
    through this wrapper (``network_pred`` in ``inference.json``) and the maps through ``network_maps``.
    """

    def __init__(self, network: nn.Module, index: int = 0) -> None:
        super().__init__()
        self.network = network
        self.index = int(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[self.index]


class ExcludeIgnoredd(MapTransform):
    """Zero ``keys`` (the binary prediction and the label) where the label is ``ignore_label``.

    The ignored pixels then count as background in both, so Dice and Jaccard only see the annotated pixels.
    """

    def __init__(
        self, keys: KeysCollection = ("pred", "label"), label_key: str = "label", ignore_label: float = -1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.ignore_label = label_key, float(ignore_label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ignored = convert_to_tensor(d[self.label_key]) == self.ignore_label
        if bool(ignored.any()):
            for key in self.key_iterator(d):
                d[key] = torch.where(ignored.to(convert_to_tensor(d[key]).device), 0, convert_to_tensor(d[key]))
        return d
