"""The dictionary form of this package's array transforms (MONAI's ``...d`` convention)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform


class ArrayTransformd(MapTransform):
    """Applies an array transform to each of ``keys``; the ``...d`` classes of this package build their array
    transform and pass it here."""

    def __init__(self, keys: KeysCollection, transform: Callable, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
