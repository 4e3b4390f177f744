"""MONAI Label's random strategy, without its failure when every unlabeled image was served in the last second.

MONAI Label weights each image by the seconds since it was last served; when all weights are 0 (two quick requests
on a datastore of few images) ``random.choices`` raises and the endpoint answers 500. Then every image is equally
likely instead.
"""

from __future__ import annotations

import random
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.activelearning.random import Random as MonaiLabelRandom


class Random(MonaiLabelRandom):
    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        try:
            return super().__call__(request, datastore)
        except ValueError:
            images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
            return {"id": random.choice(images), "weight": 0} if images else None
