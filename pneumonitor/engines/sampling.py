"""Sampling weights for torch's ``WeightedRandomSampler`` (the bundles' training data loaders)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["group_balanced_weights"]


def group_balanced_weights(
    items: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("source", "label"),
    power: float = 1.0,
    nested: bool = False,
) -> torch.Tensor:
    """Per-item sampling weights (float64, summing to ``len(items)``) for torch's ``WeightedRandomSampler``.

    Flat (``nested=False``): ``1 / n_group ** power`` with one group per distinct value tuple of ``keys``; with
    ``power=1`` every group is drawn equally often whatever its size, ``power=0`` gives uniform weights.
    Nested (``nested=True``): the keys are levels; each value of the first key gets an equal share, split equally
    among the values of the second key found under it, and so on; a leaf group spreads its share evenly
    (``power`` does not apply). With ``("source", "label", "has_localization")`` every source weighs the same, each
    source's negatives as much as its positives, and its localized positives as much as its other positives.

    Why: the training mix's adult positives come from one collection and most adult negatives from another (JSRT),
    so unweighted training learns the source; balancing labels within each source makes the collection's own few
    negatives count as much as its positives. Items missing a key form their own ``None`` group.
    """
    if not items:
        raise ValueError("no items to weight")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    groups = [tuple(str(item.get(key)) for key in keys) for item in items]
    counts: dict[tuple[str, ...], int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    if not nested:
        weights = torch.tensor([counts[group] ** -power for group in groups], dtype=torch.float64)
        return weights * (len(items) / weights.sum())
    # share of each leaf group: product over levels of 1 / (number of sibling values under the same parent)
    children: dict[tuple[str, ...], set[str]] = {}
    for group in counts:
        for level in range(len(group)):
            children.setdefault(group[:level], set()).add(group[level])
    share = {group: float(np.prod([1.0 / len(children[group[:level]]) for level in range(len(group))]))
             for group in counts}
    weights = torch.tensor([share[group] / counts[group] for group in groups], dtype=torch.float64)
    return weights * (len(items) / weights.sum())
