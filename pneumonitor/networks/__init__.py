"""The two networks of the paper, their loss, and loading them from their bundles."""

from pneumonitor.networks.bundle import (
    LoadedNetwork,
    WeightsNotFound,
    combine_dlnet_bundles,
    load_bundle,
    save_bundle,
    save_half_precision,
    serve_trained_weights,
)
from pneumonitor.networks.dlnet import DLNet, ExtentHead, LocalizationHead, ClassificationHead, maps_to_heatmap
from pneumonitor.networks.ensemble import DLNetEnsemble
from pneumonitor.networks.losses import DLNetLoss
from pneumonitor.networks.lsnet import LSNet

__all__ = [
    "ClassificationHead",
    "DLNet",
    "DLNetEnsemble",
    "DLNetLoss",
    "ExtentHead",
    "LSNet",
    "LoadedNetwork",
    "LocalizationHead",
    "WeightsNotFound",
    "combine_dlnet_bundles",
    "load_bundle",
    "maps_to_heatmap",
    "save_bundle",
    "save_half_precision",
    "serve_trained_weights",
]
