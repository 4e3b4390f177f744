"""LSNet: the ``lungs`` infer task and the ``lsnet`` trainer."""

from __future__ import annotations

from typing import Any

from lib.configs.base import BundleConfig
from lib.infers import LungsInfer


class LSNetConfig(BundleConfig):
    """Tasks of the LSNet bundle at ``path`` (a working copy, see :mod:`lib.configs.bundles`)."""

    name = "lsnet"
    kind = "LSNet"

    def infer(self) -> dict[str, Any]:
        missing = f"{self.path} lacks configs/inference.json, metadata.json or models/model.pt"
        return self.served("lungs", LungsInfer(self.path, self.conf), missing)
