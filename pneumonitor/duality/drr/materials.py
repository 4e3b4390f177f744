"""Materials of the DRR model: HU -> mass density, material decomposition, and mass attenuation coefficients.

* Decomposition (DeepDRR's thresholding): air <= -800 HU < soft tissue <= 350 HU < bone (thresholds configurable,
  shared with :func:`pneumonitor.duality.ct.decompose_materials`).
* Density (DeepDRR's piecewise-linear fit, g/cm^3): ``rho = max(0, min(1.030 + 0.001029 * HU, 1.030 + 0.0005886 * HU))``
  i.e. slope 0.001029 below 0 HU and 0.0005886 above (bone is less dense per HU than soft tissue).
* Mass attenuation coefficients ``mu/rho`` (cm^2/g, total with coherent scattering) per energy from the NIST / Elam
  elemental tables shipped with ``xraydb`` (no network), mixed by mass fraction of each material's ICRU-44 (NIST)
  composition (the mixture rule). Tables are cached in memory.
"""

from __future__ import annotations

import functools

import numpy as np

from pneumonitor.duality.ct import AIR_MAX_HU, BONE_MIN_HU

#: Mass fractions (ICRU Report 44, as tabulated by NIST "X-Ray Mass Attenuation Coefficients", Table 2),
#: in the order of the projector's material channels.
COMPOSITIONS: dict[str, dict[str, float]] = {
    # Air, Dry (near sea level)
    "air": {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
    # Tissue, Soft (ICRU-44)
    "soft_tissue": {
        "H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003, "Cl": 0.002, "K": 0.003,
    },
    # Bone, Cortical (ICRU-44)
    "bone": {
        "H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225,
    },
}
MATERIALS: tuple[str, ...] = ("air", "soft_tissue", "bone")
#: Water (for checks against Beer-Lambert), H2O mass fractions.
WATER = {"H": 0.111894, "O": 0.888106}


def hu_to_density(hu: np.ndarray) -> np.ndarray:
    """Mass density in g/cm^3 (>= 0) from HU, DeepDRR's piecewise-linear conversion. Same shape as ``hu``."""
    hu = np.asarray(hu, dtype=np.float32)
    return np.maximum(np.minimum(1.030 + 0.001029 * hu, 1.030 + 0.0005886 * hu), 0.0).astype(np.float32)


def material_channels(
    hu: np.ndarray, air_max_hu: float = AIR_MAX_HU, bone_min_hu: float = BONE_MIN_HU
) -> np.ndarray:
    """Density split by material: float32 ``[3, *hu.shape]`` (g/cm^3), channels in :data:`MATERIALS` order.

    Each voxel's density goes to exactly one channel; projecting the channels gives per-material line integrals.
    """
    density = hu_to_density(hu)
    air = hu <= air_max_hu
    bone = hu > bone_min_hu
    soft = ~air & ~bone
    return np.stack([density * air, density * soft, density * bone]).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _mass_attenuation_cached(composition: tuple[tuple[str, float], ...], energies_kev: tuple[float, ...]) -> np.ndarray:
    import xraydb

    energies_ev = np.asarray(energies_kev, dtype=float) * 1000.0
    total = sum(weight for _, weight in composition)
    mu = np.zeros(len(energies_kev))
    for element, weight in composition:
        mu += (weight / total) * np.asarray(xraydb.mu_elam(element, energies_ev, kind="total"), dtype=float)
    return mu


def mass_attenuation(composition: dict[str, float], energies_kev: np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient mu/rho (cm^2/g) of a mixture at ``energies_kev`` (1-D, keV). Cached."""
    key = tuple(sorted((str(k), float(v)) for k, v in composition.items()))
    return _mass_attenuation_cached(key, tuple(float(e) for e in np.asarray(energies_kev).ravel())).copy()


def material_attenuation_table(energies_kev: np.ndarray) -> np.ndarray:
    """mu/rho (cm^2/g) of the projector's materials: float64 ``[E, 3]``, columns in :data:`MATERIALS` order."""
    return np.stack([mass_attenuation(COMPOSITIONS[m], energies_kev) for m in MATERIALS], axis=1)
