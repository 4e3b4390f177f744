"""The two networks of the paper, their loss and weight loading."""

from pneumonitor.networks.checkpoint import LoadedNetwork, WeightsNotFound, load_network, save_checkpoint, save_half_precision
from pneumonitor.networks.dlnet import DLNet, LocalizationHead, ClassificationHead, maps_to_heatmap
from pneumonitor.networks.losses import DLNetLoss
from pneumonitor.networks.lsnet import LSNet

__all__ = [
    "ClassificationHead",
    "DLNet",
    "DLNetLoss",
    "LSNet",
    "LoadedNetwork",
    "LocalizationHead",
    "WeightsNotFound",
    "load_network",
    "maps_to_heatmap",
    "save_checkpoint",
    "save_half_precision",
]
