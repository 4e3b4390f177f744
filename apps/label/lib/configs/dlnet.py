"""DLNet: the ``pneumonia`` infer task (with LSNet's lungs), the ``dlnet`` trainer, the MC-dropout ``epistemic``
strategy and scoring method, and the ``boxes`` strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.activelearning import BoxesOnly, DLNetEpistemicScoring, Epistemic
from lib.configs.base import BundleConfig
from lib.infers import PneumoniaInfer
from lib.infers.radiograph import NetworkCache


class DLNetConfig(BundleConfig):
    """Tasks of the DLNet bundle at ``path``; ``lsnet_path`` gives the lungs the pneumonia mask is cut to."""

    name = "dlnet"
    kind = "DLNet"

    def __init__(self, path: Path, lsnet_path: Path, conf: dict[str, str]) -> None:
        super().__init__(path, conf)
        self.lsnet_path = Path(lsnet_path)
        self.scoring = DLNetEpistemicScoring(
            NetworkCache(self.path, "DLNet"),
            passes=int(conf.get("epistemic_passes", 20)),
            max_images=int(conf.get("epistemic_max_images", 200)),
        )

    def infer(self) -> dict[str, Any]:
        missing = f"{self.path} or {self.lsnet_path} lacks configs or models/model.pt"
        return self.served("pneumonia", PneumoniaInfer(self.path, self.lsnet_path, self.conf), missing)

    def strategy(self) -> dict[str, Any]:
        return {"epistemic": Epistemic(self.scoring), "boxes": BoxesOnly()}

    def scoring_method(self) -> dict[str, Any]:
        return {"dlnet_epistemic": self.scoring}
