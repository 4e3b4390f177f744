"""Batch preparation for DLNet's trainer and evaluator.

DLNet learns from three targets (the label, the soft localization target and a flag saying whether the target is
known); MONAI's engines pass one ``targets`` object from ``prepare_batch`` to ``loss_function(pred, targets)``, so
:class:`DLNetPrepareBatch` gives ``(image, {"label", "target", "has_target"})``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["DLNetPrepareBatch"]


class DLNetPrepareBatch(PrepareBatch):
    """Batch dict -> ``(image, targets)`` for DLNet's trainer and evaluator.

    ``targets = {"label": (B, 1) float or None, "target": (B, 1, h, w) float or None, "has_target": (B,) float}``
    plus, when the batch has them, the weak-supervision inputs ``lung`` ``(B, 1, h, w)``, ``has_lung`` ``(B,)`` and
    ``extent`` ``(B,)``; inference data (no ``label``, no ``target``) give ``None`` and ``has_target`` zeros.
    """

    WEAK_KEYS = ("lung", "has_lung", "extent")

    def __init__(
        self, image_key: str = "image", label_key: str = "label", target_key: str = "target",
        has_target_key: str = "has_target",
    ) -> None:
        self.image_key, self.label_key = image_key, label_key
        self.target_key, self.has_target_key = target_key, has_target_key

    def __call__(
        self, batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        batch = image.shape[0]
        label = batchdata.get(self.label_key)
        if label is not None:
            label = torch.as_tensor(label).reshape(batch, 1).to(device=device, dtype=torch.float32,
                                                                non_blocking=non_blocking)
        target = batchdata.get(self.target_key)
        if target is not None:
            target = torch.as_tensor(target).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        has_target = batchdata.get(self.has_target_key)
        has_target = (
            torch.zeros(batch) if has_target is None or target is None else torch.as_tensor(has_target).reshape(batch)
        ).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        targets = {"label": label, "target": target, "has_target": has_target}
        for key in self.WEAK_KEYS:
            if batchdata.get(key) is not None:
                targets[key] = torch.as_tensor(batchdata[key]).to(device=device, dtype=torch.float32,
                                                                   non_blocking=non_blocking)
        return image, targets
