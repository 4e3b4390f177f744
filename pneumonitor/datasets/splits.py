"""Seeded, patient-level, label-stratified train / validation / test splits.

All images of a patient go to the same split, so no patient is both trained on and tested on. Patients are grouped by
their label (the maximum label over their images, i.e. a patient with any positive image is a positive patient),
shuffled with ``numpy.random.default_rng(seed)`` after sorting (so the result does not depend on input order), and
each stratum is cut by the fractions: ``round(n * f_validation)`` to validation, ``round(n * f_test)`` to test, the
rest to training.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Mapping, MutableMapping, Sequence

import numpy as np

from pneumonitor.datasets.datalist import SPLITS

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/validation/test fractions (three non-negative numbers summing to 1 within 1e-6)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {list(fractions)}")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def split_patients(
    patient_labels: Mapping[Hashable, int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[Hashable, str]:
    """Assign every patient to ``"training"``, ``"validation"`` or ``"test"``, stratified by patient label.

    Args:
        patient_labels: patient id -> patient-level label (any integer; each value is a stratum).
        fractions: training, validation, test fractions of the patients of each stratum.
        seed: seed of the shuffle.

    Returns:
        patient id -> split name.
    """
    _, f_val, f_test = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    strata: MutableMapping[int, list[Hashable]] = defaultdict(list)
    for patient, label in patient_labels.items():
        strata[int(label)].append(patient)
    assignment: dict[Hashable, str] = {}
    for label in sorted(strata):
        patients = sorted(strata[label], key=str)
        order = rng.permutation(len(patients))
        n_val = int(round(len(patients) * f_val))
        n_test = int(round(len(patients) * f_test))
        for rank, index in enumerate(order):
            split = "validation" if rank < n_val else "test" if rank < n_val + n_test else "training"
            assignment[patients[index]] = split
    return assignment


def assign_splits(
    items: Sequence[MutableMapping[str, Any]],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    patient_key: str = "patient_id",
    label_key: str = "label",
) -> Sequence[MutableMapping[str, Any]]:
    """Set ``item["split"]`` in place for each item with a patient-level split (see ``split_patients``).

    Items without a label count as label 0 for stratification. Returns ``items``.
    """
    patient_labels: dict[Hashable, int] = {}
    for item in items:
        label = item.get(label_key)
        label = int(label) if isinstance(label, (int, np.integer)) else 0
        patient = item[patient_key]
        patient_labels[patient] = max(patient_labels.get(patient, label), label)
    assignment = split_patients(patient_labels, fractions, seed)
    for item in items:
        item["split"] = assignment[item[patient_key]]
    return items


__all__ = ["DEFAULT_FRACTIONS", "SPLITS", "assign_splits", "check_fractions", "split_patients"]
