"""DLNet: the ``pneumonia`` infer task (with LSNet's lungs), the ``dlnet`` trainer, the MC-dropout ``epistemic``
strategy and scoring method, and the ``boxes`` strategy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lib.activelearning import BoxesOnly, DLNetEpistemicScoring, Epistemic
from lib.infers import PneumoniaInfer
from lib.infers.radiograph import NetworkCache
from lib.trainers import RadiographTrainTask

logger = logging.getLogger(__name__)


class DLNetConfig:
    """Tasks of the DLNet bundle at ``path``; ``lsnet_path`` gives the lungs the pneumonia mask is cut to."""

    name = "dlnet"

    def __init__(self, path: Path, lsnet_path: Path, conf: dict[str, str]) -> None:
        self.path = Path(path)
        self.lsnet_path = Path(lsnet_path)
        self.conf = conf
        self.scoring = DLNetEpistemicScoring(
            NetworkCache(self.path, "DLNet"),
            passes=int(conf.get("epistemic_passes", 20)),
            max_images=int(conf.get("epistemic_max_images", 200)),
        )

    def infer(self) -> dict[str, Any]:
        task = PneumoniaInfer(self.path, self.lsnet_path, self.conf)
        if not task.is_valid():
            logger.warning("'pneumonia' is not served: %s or %s lacks configs or models/model.pt",
                           self.path, self.lsnet_path)
            return {}
        return {"pneumonia": task}

    def trainer(self) -> dict[str, Any]:
        task = RadiographTrainTask(self.path, self.conf, kind="DLNet", name=self.name)
        return {self.name: task} if task.is_valid() else {}

    def strategy(self) -> dict[str, Any]:
        return {"epistemic": Epistemic(self.scoring), "boxes": BoxesOnly()}

    def scoring_method(self) -> dict[str, Any]:
        return {"dlnet_epistemic": self.scoring}
