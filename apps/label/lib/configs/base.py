"""What every served bundle's config shares: its trainer, and an infer task served only when its bundle is complete."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from lib.trainers import RadiographTrainTask

logger = logging.getLogger(__name__)


class BundleConfig(ABC):
    """The tasks of the bundle at ``path`` whose network is ``kind``; the trainer is named after the config.

    Subclasses set ``name`` and ``kind`` and implement :meth:`infer`; they add strategies and scoring methods where
    their network brings some (none by default).
    """

    name: str
    kind: str

    def __init__(self, path: Path, conf: dict[str, str]) -> None:
        self.path = Path(path)
        self.conf = conf

    @abstractmethod
    def infer(self) -> dict[str, Any]:
        """``{task name: infer task}``, empty when the bundle cannot serve it."""

    def trainer(self) -> dict[str, Any]:
        task = RadiographTrainTask(self.path, self.conf, kind=self.kind, name=self.name)
        return {self.name: task} if task.is_valid() else {}

    def strategy(self) -> dict[str, Any]:
        return {}

    def scoring_method(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def served(name: str, task: Any, missing: str) -> dict[str, Any]:
        """``{name: task}`` when the task's bundle files are there, else ``{}`` and a warning naming ``missing``."""
        if task.is_valid():
            return {name: task}
        logger.warning("'%s' is not served: %s", name, missing)
        return {}
