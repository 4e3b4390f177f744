"""The analytic phantom the projector is checked against: a uniform ellipsoid centred at the origin, as a voxel
occupancy and as the exact length of every detector ray inside it (tests and ``scripts/bench_drr.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["centred_origin", "ellipsoid_occupancy", "ellipsoid_chord_lengths"]


def centred_origin(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, ...]:
    """World (x, y, z) mm of voxel (0, 0, 0) that puts the volume's centre at the origin; ``shape``/``spacing`` are
    [Z, Y, X] like the volume."""
    return tuple(-(n - 1) / 2 * s for n, s in zip(shape[::-1], spacing[::-1]))


def ellipsoid_occupancy(shape: Sequence[int], spacing: Sequence[float], semi_axes_xyz: Sequence[float],
                        supersample: int = 4) -> np.ndarray:
    """Fraction of each voxel inside the ellipsoid (``supersample``^3 points per voxel), float32 [Z, Y, X]."""
    origin = centred_origin(shape, spacing)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    zi, yi, xi = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    axes = np.asarray(semi_axes_xyz, float)
    occupancy = np.zeros(tuple(shape))
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                x = origin[0] + (xi + dx) * spacing[2]
                y = origin[1] + (yi + dy) * spacing[1]
                z = origin[2] + (zi + dz) * spacing[0]
                occupancy += (x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2 <= 1
    return (occupancy / supersample**3).astype(np.float32)


def ellipsoid_chord_lengths(geometry, semi_axes_xyz: Sequence[float]) -> np.ndarray:
    """Exact length (mm) of each detector ray of ``geometry`` (a ConeBeamGeometry) inside the ellipsoid, [rows, cols]."""
    source = geometry.source_mm()
    d = geometry.detector_points_mm() - source
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    quadric = np.diag(1.0 / np.asarray(semi_axes_xyz, float) ** 2)
    qa = np.einsum("...i,ij,...j", d, quadric, d)
    qb = 2 * np.einsum("...i,ij,j", d, quadric, source)
    qc = source @ quadric @ source - 1
    disc = qb**2 - 4 * qa * qc
    return np.where(disc > 0, np.sqrt(np.maximum(disc, 0)) / qa, 0.0)
