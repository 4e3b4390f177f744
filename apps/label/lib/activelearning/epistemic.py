"""MC-dropout epistemic uncertainty of DLNet's pneumonia probability, and the strategy that serves the most uncertain
unlabeled image first.

The passes are :meth:`pneumonitor.inference.analyzer.Analyzer.mc_dropout` (what ``analyze --uncertainty flip+mc``
runs): DLNet's backbone once per image in eval mode (batch-norm statistics frozen), its classification head
``passes`` times with its dropout active (Gal & Ghahramani 2016), seeded. The score is the variance of the
``passes`` probabilities (0 = certain; at most 0.25); the mean probability is stored beside it.

Scores are kept in each image's datastore info (``epistemic_score``, ``epistemic_mean``, ``epistemic_passes``,
``epistemic_model``: the sha256 of the weights that produced them), so scoring after a training run refreshes them.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from lib.infers.radiograph import NetworkCache, resolve_radiograph_path
from pneumonitor.inference.analyzer import Analyzer
from pneumonitor.reading import UnsupportedInput, read_radiograph

logger = logging.getLogger(__name__)

SCORE_KEY = "epistemic_score"


class DLNetEpistemicScoring(ScoringMethod):
    """Scores unlabeled images (``POST /scoring/dlnet_epistemic``); at most ``max_images`` per call (request key)."""

    def __init__(self, networks: NetworkCache, passes: int = 20, max_images: int = 200) -> None:
        super().__init__(f"MC-dropout epistemic uncertainty of DLNet's probability ({passes} passes)")
        self.networks = networks
        self.passes = passes
        self.max_images = max_images

    def score_image(self, path: str, device: str = "cpu", passes: int | None = None) -> dict[str, Any]:
        loaded = self.networks.get(device)
        radiograph = read_radiograph(resolve_radiograph_path(path))
        analyzer = Analyzer(loaded, None, device=device)
        probabilities = analyzer.mc_dropout(analyzer.dlnet_input(radiograph)[None], passes or self.passes, seed=0)[:, 0]
        return {
            SCORE_KEY: float(np.var(probabilities)),
            "epistemic_mean": float(np.mean(probabilities)),
            "epistemic_passes": int(len(probabilities)),
            "epistemic_model": loaded.sha256,
        }

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        if not self.networks.weights.is_file():
            return {"scored": 0, "reason": f"no DLNet weights at {self.networks.weights}"}
        device = request.get("device", "cpu")
        device = device[0] if isinstance(device, list) else device
        device = "cpu" if str(device).startswith("cuda") and not torch.cuda.is_available() else device
        model = self.networks.get(device).sha256
        images = sorted(datastore.get_unlabeled_images())
        todo = [i for i in images if datastore.get_image_info(i).get("epistemic_model") != model]
        limit = int(request.get("max_images", self.max_images))
        scored, skipped = 0, {}
        for image_id in todo[:limit]:
            try:
                info = self.score_image(datastore.get_image_uri(image_id), device, request.get("passes"))
            except (UnsupportedInput, ValueError, OSError) as exc:
                skipped[image_id] = str(exc)
                continue
            datastore.update_image_info(image_id, info)
            scored += 1
        logger.info("epistemic scoring: %d scored, %d skipped, %d left", scored, len(skipped), len(todo) - scored)
        return {"scored": scored, "skipped": skipped, "remaining": max(0, len(todo) - limit)}


class Epistemic(Strategy):
    """The unlabeled image with the highest MC-dropout score; up to ``max_images_per_request`` images without a
    score from the served weights are scored first, so requests after a training run reflect the new weights."""

    def __init__(self, scoring: DLNetEpistemicScoring, max_images_per_request: int = 32) -> None:
        super().__init__("Most uncertain unlabeled image first (DLNet MC-dropout variance)")
        self.scoring = scoring
        self.max_images_per_request = max_images_per_request

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        # bounded, so that a request on a large datastore answers; POST /scoring/dlnet_epistemic scores the rest
        self.scoring({"max_images": self.max_images_per_request, **request}, datastore)
        candidates = []
        for image_id in datastore.get_unlabeled_images():
            score = datastore.get_image_info(image_id).get(SCORE_KEY)
            if score is not None:
                candidates.append((float(score), image_id))
        if not candidates:
            return None
        # ties (e.g. identical scores) are broken at random, not by name
        best = max(score for score, _ in candidates)
        image_id = random.choice([i for s, i in candidates if s == best])
        return {"id": image_id, SCORE_KEY: best}
