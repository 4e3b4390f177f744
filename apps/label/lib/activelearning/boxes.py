"""Serve the images that still only have boxes: they have ``boxes`` in their datastore info and no saved label.

Boxes are ``[[x0, y0, x1, y1], ...]`` in pixels of the stored image, end-exclusive (:mod:`pneumonitor.datasets.bounding_boxes`);
``pneumonia`` inference turns them into a Grad-CAM proposal for the annotator to correct.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy


class BoxesOnly(Strategy):
    """The first (by id) unlabeled image that has boxes; ``None`` when every boxed image has a label."""

    def __init__(self) -> None:
        super().__init__("Unlabeled images that only have boxes, in id order")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        label_tag = request.get("label_tag")
        for image_id in sorted(datastore.get_unlabeled_images(label_tag)):
            boxes = datastore.get_image_info(image_id).get("boxes")
            if boxes:
                return {"id": image_id, "boxes": len(boxes)}
        return None
