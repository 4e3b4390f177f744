"""Ignite handlers the bundles attach: the metrics of :mod:`pneumonitor.engines.metrics` and resumable training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
from monai.handlers import IgniteMetricHandler

from pneumonitor.engines.metrics import HeatmapBoxPrecisionMetric, ItemMeanMetric, ROCOperatingPointMetric

__all__ = ["ROCOperatingPoint", "ItemMean", "HeatmapBoxPrecision", "ResumeCheckpoint"]


class ROCOperatingPoint(IgniteMetricHandler):
    """Ignite handler of :class:`ROCOperatingPointMetric` (``output_transform`` gives ``(pred, label)``)."""

    def __init__(self, statistic: str = "accuracy", output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=ROCOperatingPointMetric(statistic), output_transform=output_transform,
                         save_details=False)


class ItemMean(IgniteMetricHandler):
    """Ignite handler: the mean over all evaluated items of ``item[key]`` (the validation loss with ``key="loss"``,
    which :class:`DLNetOutputd` computes per item)."""

    def __init__(self, key: str = "loss") -> None:
        super().__init__(
            metric_fn=ItemMeanMetric(),
            output_transform=lambda output: ([item[key] for item in output], [item[key] for item in output]),
            save_details=False,
        )


class HeatmapBoxPrecision(IgniteMetricHandler):
    """Ignite handler of :class:`HeatmapBoxPrecisionMetric` (``output_transform`` gives ``(heatmap, region)``)."""

    def __init__(self, threshold: float = 0.8, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=HeatmapBoxPrecisionMetric(threshold), output_transform=output_transform,
                         save_details=False)


class ResumeCheckpoint:
    """Makes a training run resumable: saves ``save_dict``'s states to ``path`` after every epoch (atomically) and,
    when ``path`` exists as training starts, loads them back, so a killed run continues where it stopped.

    ``save_dict`` should hold the network, the optimizer, the LR scheduler and the best-model saver's checkpoint
    bookkeeping (so a resumed run does not overwrite a better ``model.pt`` with its first validation); the engine the
    handler is attached to is added as ``trainer`` (its epoch and iteration counters: ignite then runs only the
    remaining epochs; a config could not name it without a circular reference). Loading uses MONAI's
    ``CheckpointLoader``; the file is removed by nobody: delete it to start over.
    """

    def __init__(self, path: str, save_dict: Mapping[str, Any]) -> None:
        self.path = str(path)
        self.save_dict = dict(save_dict)

    def attach(self, engine: Any) -> None:
        import logging
        import os

        from ignite.engine import Events
        from monai.handlers import CheckpointLoader

        self.save_dict.setdefault("trainer", engine)
        if os.path.isfile(self.path):
            logging.getLogger(__name__).info("resuming from %s", self.path)
            CheckpointLoader(load_path=self.path, load_dict=self.save_dict, map_location="cpu").attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _save(self, engine: Any) -> None:
        from pathlib import Path

        from pneumonitor.networks.bundle import torch_save_atomic

        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return  # one writer: every rank holds the same states under DDP
        torch_save_atomic({name: obj.state_dict() for name, obj in self.save_dict.items()}, Path(self.path))
