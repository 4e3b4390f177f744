"""Workflow pieces the MONAI bundles of DLNet and LSNet wire into MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``,
split by kind as MONAI splits its own: batch preparation (:mod:`.batches`), losses in the engines' call form
(:mod:`.loss_adapters`), sampling weights (:mod:`.sampling`), output post-processing (:mod:`.outputs`), cumulative
metrics (:mod:`.metrics`), Ignite handlers (:mod:`.handlers`), writers (:mod:`.writers`) and the end of a
multi-process run (:mod:`.distributed`).

The bundle configs name them through this package (``pneumonitor.engines.DLNetPrepareBatch``), as MONAI's configs
name ``monai.handlers.ValidationHandler``.
"""

from pneumonitor.engines.batches import DLNetPrepareBatch
from pneumonitor.engines.distributed import finish_process_group
from pneumonitor.engines.handlers import HeatmapBoxPrecision, ItemMean, ResumeCheckpoint, ROCOperatingPoint
from pneumonitor.engines.loss_adapters import DLNetEngineLoss, MaskedBinaryDiceLoss
from pneumonitor.engines.metrics import (
    HeatmapBoxPrecisionMetric,
    ItemMeanMetric,
    ROCOperatingPointMetric,
    roc_operating_point,
)
from pneumonitor.engines.outputs import DLNetOutputd, ExcludeIgnoredd, SelectOutput
from pneumonitor.engines.sampling import group_balanced_weights
from pneumonitor.engines.writers import SavePNGd

__all__ = [
    "DLNetPrepareBatch",
    "DLNetEngineLoss",
    "DLNetOutputd",
    "ROCOperatingPointMetric",
    "ROCOperatingPoint",
    "roc_operating_point",
    "HeatmapBoxPrecisionMetric",
    "HeatmapBoxPrecision",
    "MaskedBinaryDiceLoss",
    "ExcludeIgnoredd",
    "SelectOutput",
    "SavePNGd",
    "ResumeCheckpoint",
    "ItemMean",
    "ItemMeanMetric",
    "group_balanced_weights",
    "finish_process_group",
]
