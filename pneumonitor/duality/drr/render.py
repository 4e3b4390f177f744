"""Physically based DRR rendering from a chest CT: body mask -> materials -> projection -> polyenergetic
Beer-Lambert -> optional Poisson noise -> post-processing; and projection of 3-D labels as ground-truth footprints.

Physics (DeepDRR's model without its scatter network):

* per-material line integrals ``L_m`` (g/cm^2) of the density of air, soft tissue and bone (:mod:`.materials`);
* transmission of an **energy-integrating** detector: ``I / I0 = sum_E w_E exp(-sum_m (mu/rho)_m(E) L_m)`` with
  ``w_E = N(E) E / sum N(E) E`` (each photon contributes its energy, as in a scintillator flat panel), ``N(E)`` the
  tube spectrum (:mod:`.spectrum`);
* optional quantum noise: with ``photons_per_pixel`` N0 unattenuated photons per pixel (paper: 1e5), the detected
  photon count is Poisson with mean ``N0 sum_E N(E) T(E)`` and the energy they deposit gets the spread of the
  transmitted spectrum (normal approximation of the compound Poisson sum: exact mean and variance);
* **scatter is out of scope** (DeepDRR estimates it with a network trained on Monte Carlo; not reproduced here):
  the DRRs are primary-only, so they have somewhat more contrast than a real radiograph without a grid.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from pneumonitor.duality.ct import AIR_MAX_HU, BONE_MIN_HU, CTVolume, apply_body_mask, body_mask
from pneumonitor.duality.drr.geometry import ConeBeamGeometry
from pneumonitor.duality.drr.materials import MATERIALS, material_attenuation_table, material_channels
from pneumonitor.duality.drr.postprocess import BRIGHT_MEAN, GAMMA, to_radiograph
from pneumonitor.duality.drr.projector import project
from pneumonitor.duality.drr.spectrum import Spectrum, tube_spectrum

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DRRPhysics:
    """X-ray physics settings (defaults: the paper's)."""

    kvp: float = 120.0
    filter_al_mm: float = 4.3
    anode_angle_deg: float = 12.0
    energy_bin_kev: float = 2.0
    photons_per_pixel: float | None = 1e5  # None: noise-free
    air_max_hu: float = AIR_MAX_HU
    bone_min_hu: float = BONE_MIN_HU
    body_segmentation: bool = True
    bright_mean: float = BRIGHT_MEAN
    gamma: float = GAMMA
    postprocess: str = "paper"  # or "log" (see pneumonitor.duality.drr.postprocess.to_radiograph)
    seed: int = 0

    def spectrum(self) -> Spectrum:
        return tube_spectrum(self.kvp, self.filter_al_mm, self.anode_angle_deg, self.energy_bin_kev)


@dataclasses.dataclass
class DRR:
    """A rendered DRR.

    Attributes:
        image: uint8 ``[H, W]`` radiograph after post-processing (lungs dark).
        transmission: float32 ``[H, W]`` ``I / I0`` in (0, 1] before post-processing (noisy if noise was on).
        line_integrals: float32 ``[3, H, W]`` g/cm^2 of air, soft tissue, bone.
        geometry: the geometry used (isocentre filled in).
        gamma_applied: whether post-processing applied the gamma correction.
        footprints: name -> float32 ``[H, W]`` path length (mm) through each projected 3-D label.
    """

    image: np.ndarray
    transmission: np.ndarray
    line_integrals: np.ndarray
    geometry: ConeBeamGeometry
    gamma_applied: bool
    footprints: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def footprint_mask(self, name: str, min_path_mm: float = 1.0) -> np.ndarray:
        """Boolean ``[H, W]``: detector pixels whose ray crosses label ``name`` over at least ``min_path_mm``."""
        return self.footprints[name] >= min_path_mm


def body_isocentre(mask: np.ndarray, ct: CTVolume) -> np.ndarray:
    """LPS (x, y, z) mm of the centre of the bounding box of ``mask`` (the volume centre if it is empty)."""
    if not mask.any():
        return ct.centre()
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    centre_zyx = np.array([(i[0] + i[-1]) / 2.0 for i in idx])
    return np.asarray(ct.origin) + centre_zyx[::-1] * np.asarray(ct.spacing[::-1])


def transmission_from_line_integrals(
    line_integrals_g_cm2: torch.Tensor,
    spectrum: Spectrum,
    photons_per_pixel: float | None = None,
    generator: torch.Generator | None = None,
    attenuation_table: np.ndarray | None = None,
) -> torch.Tensor:
    """Energy-integrating detector signal ``I / I0`` from per-material line integrals.

    Args:
        line_integrals_g_cm2: ``[C, H, W]`` in g/cm^2 (C = 3: air, soft tissue, bone).
        spectrum: photon spectrum. photons_per_pixel: N0 for Poisson noise, or None.
        attenuation_table: mu/rho (cm^2/g) ``[E, C]`` of other materials than air / soft tissue / bone (checks).
    Returns:
        float32 ``[H, W]`` transmission (1 = no attenuation).
    """
    device = line_integrals_g_cm2.device
    table = material_attenuation_table(spectrum.energies_kev) if attenuation_table is None else attenuation_table
    mu = torch.as_tensor(np.asarray(table).reshape(len(spectrum.energies_kev), -1), dtype=torch.float32, device=device)
    if mu.shape[1] != line_integrals_g_cm2.shape[0]:
        raise ValueError(f"{mu.shape[1]} attenuation columns for {line_integrals_g_cm2.shape[0]} line-integral channels")
    energies = torch.as_tensor(spectrum.energies_kev, dtype=torch.float32, device=device)
    fluence = torch.as_tensor(spectrum.fluence, dtype=torch.float32, device=device)
    energy_norm = float((fluence * energies).sum())
    shape = line_integrals_g_cm2.shape[1:]
    signal = torch.zeros(shape, dtype=torch.float32, device=device)  # sum_E N(E) E T(E)
    photons = torch.zeros(shape, dtype=torch.float32, device=device)  # sum_E N(E) T(E)
    energy2 = torch.zeros(shape, dtype=torch.float32, device=device)  # sum_E N(E) E^2 T(E)
    for e in range(len(energies)):
        transmitted = fluence[e] * torch.exp(-torch.einsum("m,mhw->hw", mu[e], line_integrals_g_cm2))
        signal += energies[e] * transmitted
        if photons_per_pixel is not None:
            photons += transmitted
            energy2 += energies[e] ** 2 * transmitted
    if photons_per_pixel is not None:
        # Compound Poisson: the photon count is Poisson (exact draw); given the count n, the summed energy has mean
        # n * E_mean and variance n * E_var of the transmitted spectrum (normal approximation, >= 200 photons per
        # pixel through an adult chest at 1e5). Same mean and variance as per-bin Poisson draws, 50x cheaper.
        mean_energy = signal / photons.clamp_min(1e-30)
        energy_var = (energy2 / photons.clamp_min(1e-30) - mean_energy**2).clamp_min(0.0)
        counts = torch.poisson(photons_per_pixel * photons, generator=generator)
        spread = torch.randn(shape, generator=generator, device=device) * torch.sqrt(counts * energy_var)
        signal = (counts * mean_energy + spread).clamp_min(0.0) / photons_per_pixel
    return signal / energy_norm


def render_drr(
    ct: CTVolume,
    geometry: ConeBeamGeometry | None = None,
    physics: DRRPhysics | None = None,
    labels: dict[str, np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    body: np.ndarray | None = None,
) -> DRR:
    """Render a DRR of ``ct``.

    Args:
        ct: CT in HU (LPS, :class:`pneumonitor.duality.ct.CTVolume`).
        geometry: cone-beam geometry; its isocentre defaults to the centre of the body's bounding box.
        physics: tube, noise, material and post-processing settings.
        labels: optional name -> bool ``[Z, Y, X]`` masks on the CT grid to project as ground-truth footprints.
        device: torch device ("cpu", "cuda", ...); the same code runs on both.
        body: precomputed :func:`pneumonitor.duality.ct.body_mask` of ``ct`` (saves its time when rendering several views).
    """
    geometry = geometry or ConeBeamGeometry()
    physics = physics or DRRPhysics()
    if physics.body_segmentation:
        mask = body if body is not None else body_mask(ct.hu, physics.air_max_hu, physics.bone_min_hu)
        ct = apply_body_mask(ct, mask)
    else:
        mask = ct.hu > physics.air_max_hu
    if geometry.isocentre_mm is None:
        geometry = geometry.with_isocentre(body_isocentre(mask, ct))
    channels = material_channels(ct.hu, physics.air_max_hu, physics.bone_min_hu)
    if physics.body_segmentation:
        # Air outside the body is the room, not the patient: the detector's I0 already includes it.
        channels[0][~mask] = 0.0
    names = list(labels or {})
    for name in names:
        if labels[name].shape != ct.shape:
            raise ValueError(f"label {name!r} has shape {labels[name].shape}, the CT {ct.shape}")
    if names:
        # Labels ride along as extra channels of the same projection: one pass over the volume.
        channels = np.concatenate([channels, np.stack([labels[n].astype(np.float32) for n in names])])
    device = torch.device(device)
    volume = torch.from_numpy(channels).to(device)
    projected = project(volume, ct.spacing, ct.origin, geometry, progress=progress)
    del volume
    integrals = projected[: len(MATERIALS)] / 10.0  # density (g/cm^3) x path (mm) / 10 = g/cm^2
    footprints = {name: projected[len(MATERIALS) + i].cpu().numpy() for i, name in enumerate(names)}
    generator = None
    if physics.photons_per_pixel is not None:
        generator = torch.Generator(device=device).manual_seed(int(physics.seed))
    transmission = transmission_from_line_integrals(integrals, physics.spectrum(), physics.photons_per_pixel, generator)
    post = to_radiograph(transmission.cpu().numpy(), physics.bright_mean, physics.gamma, physics.postprocess)
    return DRR(
        image=post.image,
        transmission=transmission.cpu().numpy(),
        line_integrals=integrals.cpu().numpy(),
        geometry=geometry,
        gamma_applied=post.gamma_applied,
        footprints=footprints,
    )


__all__ = ["DRR", "DRRPhysics", "render_drr", "transmission_from_line_integrals", "body_isocentre", "MATERIALS"]
