"""LSNet: the ``lungs`` infer task and the ``lsnet`` trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lib.infers import LungsInfer
from lib.trainers import RadiographTrainTask

logger = logging.getLogger(__name__)


class LSNetConfig:
    """Tasks of the LSNet bundle at ``path`` (a working copy, see :mod:`lib.configs.bundles`)."""

    name = "lsnet"

    def __init__(self, path: Path, conf: dict[str, str]) -> None:
        self.path = Path(path)
        self.conf = conf

    def infer(self) -> dict[str, Any]:
        task = LungsInfer(self.path, self.conf)
        if not task.is_valid():
            logger.warning("'lungs' is not served: %s lacks configs/inference.json, metadata.json or models/model.pt",
                           self.path)
            return {}
        return {"lungs": task}

    def trainer(self) -> dict[str, Any]:
        task = RadiographTrainTask(self.path, self.conf, kind="LSNet", name=self.name)
        return {self.name: task} if task.is_valid() else {}

    def strategy(self) -> dict[str, Any]:
        return {}

    def scoring_method(self) -> dict[str, Any]:
        return {}
