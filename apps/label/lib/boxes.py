"""Box-only images: their boxes travel from the datastore to the ``pneumonia`` infer task.

MONAI Label hands an infer task the image path only; an image's boxes live in its datastore info (``boxes``,
``[[x0, y0, x1, y1], ...]`` pixels, end-exclusive). The app adds them to the request when the image has no saved
label yet, so that ``pneumonia`` answers with the Grad-CAM proposal inside the boxes.
"""

from __future__ import annotations

import os
from typing import Any

from monailabel.interfaces.datastore import Datastore


class BoxesInRequest:
    """Mixin for a :class:`MONAILabelApp`: ``infer`` requests of box-only images carry ``boxes``."""

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Adds the image's boxes (datastore info ``boxes``) to the request when the image has no label yet."""
        request = dict(request)
        image_id = request.get("image")
        if isinstance(image_id, str) and "boxes" not in request and not os.path.exists(image_id):
            store = datastore or self.datastore()
            try:
                info = store.get_image_info(image_id) or {}
            except Exception:  # noqa: BLE001 - an image the store does not know is reported by the infer itself
                info = {}
            labeled = image_id in set(store.get_labeled_images())
            if info.get("boxes") and not labeled:
                request["boxes"] = info["boxes"]
        return super().infer(request, datastore)
