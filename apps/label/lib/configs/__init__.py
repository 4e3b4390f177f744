"""One config per served bundle: which infer task, trainer, strategies and scoring methods it brings."""

from lib.configs.bundles import prepare_bundle
from lib.configs.dlnet import DLNetConfig
from lib.configs.lsnet import LSNetConfig

__all__ = ["DLNetConfig", "LSNetConfig", "prepare_bundle"]
