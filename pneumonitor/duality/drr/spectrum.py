"""X-ray tube spectra from ``spekpy`` (no network; its tables ship with the wheel), binned and cached in memory.

Default: tungsten anode at 120 kV, 12 degree anode angle, 4.3 mm Al total filtration (paper Sec. IV-C).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """A binned photon spectrum.

    Attributes:
        energies_kev: bin centres ``[E]`` in keV.
        fluence: relative photon fluence per bin ``[E]``, sums to 1 (photons, not energy).
        description: how it was made.
    """

    energies_kev: np.ndarray
    fluence: np.ndarray
    description: str

    @property
    def mean_energy_kev(self) -> float:
        return float((self.energies_kev * self.fluence).sum())


@functools.lru_cache(maxsize=16)
def _spekpy_spectrum(kvp: float, anode_angle_deg: float, filter_al_mm: float, bin_kev: float):
    import spekpy

    spek = spekpy.Spek(kvp=kvp, th=anode_angle_deg, targ="W")
    if filter_al_mm > 0:
        spek.filter("Al", filter_al_mm)
    energies, fluence = spek.get_spectrum()  # 0.5 keV bins, photons / (cm^2 mAs keV) at 1 m
    edges = np.arange(0.0, kvp + bin_kev, bin_kev)
    counts, _ = np.histogram(energies, bins=edges, weights=fluence)
    centres_weighted, _ = np.histogram(energies, bins=edges, weights=fluence * energies)
    keep = counts > counts.sum() * 1e-6  # drop empty / negligible bins (below ~15 keV nothing passes 4.3 mm Al)
    centres = centres_weighted[keep] / counts[keep]  # fluence-weighted mean energy of each bin
    return centres, counts[keep] / counts[keep].sum()


def tube_spectrum(
    kvp: float = 120.0, filter_al_mm: float = 4.3, anode_angle_deg: float = 12.0, bin_kev: float = 2.0
) -> Spectrum:
    """Tungsten-anode spectrum from spekpy, rebinned to ``bin_kev`` keV bins. Cached per argument set."""
    if not 20.0 <= kvp <= 150.0:
        raise ValueError(f"tube voltage {kvp} kV outside the diagnostic range 20-150 kV")
    if bin_kev <= 0:
        raise ValueError("bin_kev must be positive")
    energies, fluence = _spekpy_spectrum(float(kvp), float(anode_angle_deg), float(filter_al_mm), float(bin_kev))
    return Spectrum(
        energies_kev=energies.copy(),
        fluence=fluence.copy(),
        description=f"W anode {kvp:g} kV, {anode_angle_deg:g} deg, {filter_al_mm:g} mm Al (spekpy), {bin_kev:g} keV bins",
    )


def monoenergetic(energy_kev: float) -> Spectrum:
    """A single-energy spectrum (for checks against Beer-Lambert)."""
    return Spectrum(np.array([float(energy_kev)]), np.array([1.0]), f"monoenergetic {energy_kev:g} keV")
