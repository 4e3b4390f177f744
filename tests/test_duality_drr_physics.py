"""DRR physics: spectrum, materials, Beer-Lambert through a water slab, beam hardening, noise, post-processing."""

import numpy as np
import pytest
import torch

from pneumonitor.duality.drr.geometry import ConeBeamGeometry
from pneumonitor.duality.drr.materials import (
    COMPOSITIONS,
    WATER,
    hu_to_density,
    mass_attenuation,
    material_attenuation_table,
    material_channels,
)
from pneumonitor.duality.drr.postprocess import to_radiograph
from pneumonitor.duality.drr.projector import project
from pneumonitor.duality.drr.render import transmission_from_line_integrals
from pneumonitor.duality.drr.spectrum import monoenergetic, tube_spectrum

#: NIST XCOM / Hubbell-Seltzer mass attenuation coefficients of liquid water (cm^2/g, total with coherent).
NIST_WATER = {30.0: 0.3756, 60.0: 0.2059, 100.0: 0.1707}


def test_tube_spectrum_is_the_paper_spectrum():
    spectrum = tube_spectrum()  # 120 kV, W anode, 4.3 mm Al
    assert spectrum.fluence.sum() == pytest.approx(1.0)
    assert spectrum.energies_kev.max() < 120.0 and spectrum.energies_kev.min() > 10.0
    assert 50.0 < spectrum.mean_energy_kev < 65.0
    # Tungsten K-alpha lines (about 58-59 keV) stand out of the bremsstrahlung continuum.
    peak_bin = np.argmax(spectrum.fluence)
    assert 55.0 < spectrum.energies_kev[peak_bin] < 61.0
    # More filtration hardens the beam.
    assert tube_spectrum(filter_al_mm=10.0).mean_energy_kev > spectrum.mean_energy_kev
    with pytest.raises(ValueError, match="kV"):
        tube_spectrum(kvp=500)


@pytest.mark.parametrize("energy", sorted(NIST_WATER))
def test_water_mass_attenuation_matches_nist(energy):
    assert mass_attenuation(WATER, np.array([energy]))[0] == pytest.approx(NIST_WATER[energy], rel=0.02)


def test_materials_order_and_density_conversion():
    table = material_attenuation_table(np.array([40.0, 80.0]))
    assert table.shape == (2, 3)
    assert (table[:, 2] > table[:, 1]).all()  # bone attenuates more per gram than soft tissue
    np.testing.assert_allclose(hu_to_density(np.array([-1000.0, 0.0, 1000.0])), [0.001, 1.03, 1.6186], atol=1e-3)
    hu = np.array([[-1000.0, -500.0, 100.0, 800.0]])
    channels = material_channels(hu)
    assert channels.shape == (3, 1, 4)
    assert ((channels > 0).sum(axis=0) == 1).all()  # each voxel in exactly one material
    np.testing.assert_allclose(channels.sum(axis=0), hu_to_density(hu))
    assert set(COMPOSITIONS) == {"air", "soft_tissue", "bone"}


def water_slab_integrals(thickness_mm=200.0, view="PA"):
    """Project a water slab (density 1 g/cm^3, perpendicular to the beam); returns (g/cm^2 [1,H,W], path mm [H,W])."""
    n, spacing = 64, (4.0, 4.0, 4.0)
    volume = np.zeros((n, n, n), np.float32)
    slab_voxels = int(thickness_mm / spacing[1])
    start = (n - slab_voxels) // 2
    volume[:, start : start + slab_voxels, :] = 1.0
    origin = tuple(-(n - 1) / 2 * s for s in spacing[::-1])
    geometry = ConeBeamGeometry(
        view=view, rows=32, cols=32, pixel_size_mm=4.0, source_to_detector_mm=1000, source_to_isocentre_mm=700
    ).with_isocentre((0.0, 0.0, 0.0))
    line = project(torch.from_numpy(volume)[None], spacing, origin, geometry) / 10.0
    d = geometry.detector_points_mm() - geometry.source_mm()
    path = slab_voxels * spacing[1] * np.linalg.norm(d, axis=-1) / np.abs(d[..., 1])
    return line, path


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_monoenergetic_water_slab_follows_beer_lambert(view):
    line, path_mm = water_slab_integrals(view=view)
    energy = 60.0
    transmission = transmission_from_line_integrals(
        line, monoenergetic(energy), attenuation_table=mass_attenuation(WATER, np.array([energy]))[:, None]
    ).numpy()
    expected = np.exp(-NIST_WATER[energy] * 1.0 * path_mm / 10.0)  # mu/rho * rho * x
    inner = np.s_[4:-4, 4:-4]  # away from the slab's lateral edges
    np.testing.assert_allclose(transmission[inner], expected[inner], rtol=0.02)


def test_polyenergetic_beam_hardens_with_thickness():
    spectrum = tube_spectrum()
    mu = mass_attenuation(WATER, spectrum.energies_kev)[:, None]
    thickness_cm = torch.tensor([1.0, 5.0, 10.0, 20.0, 30.0])
    line = thickness_cm.reshape(1, 1, -1)
    transmission = transmission_from_line_integrals(line, spectrum, attenuation_table=mu)[0].numpy()
    effective_mu = -np.log(transmission) / thickness_cm.numpy()
    assert (np.diff(effective_mu) < 0).all()  # thicker water -> harder beam -> lower effective mu
    mean_energy_mu = mass_attenuation(WATER, np.array([spectrum.mean_energy_kev]))[0]
    assert effective_mu[0] > mean_energy_mu  # thin layer: soft photons still count


def test_poisson_noise_has_the_expected_mean_and_variance():
    spectrum = tube_spectrum()
    mu = mass_attenuation(WATER, spectrum.energies_kev)[:, None]
    line = torch.full((1, 200, 200), 15.0)  # 15 cm of water everywhere
    clean = transmission_from_line_integrals(line, spectrum, attenuation_table=mu)
    photons = 1e4
    generator = torch.Generator().manual_seed(3)
    noisy = transmission_from_line_integrals(line, spectrum, photons, generator, attenuation_table=mu)
    t = np.exp(-mu[:, 0] * 15.0)
    p, e = spectrum.fluence, spectrum.energies_kev
    expected_sd = np.sqrt((p * t * e**2).sum() / photons) / (p * e).sum()
    assert float(noisy.mean()) == pytest.approx(float(clean.mean()), rel=0.005)
    assert float(noisy.std()) == pytest.approx(expected_sd, rel=0.05)


def test_postprocessing_inverts_and_applies_the_gamma_rule():
    bright = np.full((8, 8), 0.05)  # 95 % absorbed everywhere: inverted mean 242 > 220
    bright[:1] = 0.5  # mean (128 + 7 * 242) / 8 = 228
    result = to_radiograph(bright)
    assert result.gamma_applied and result.mean_before_gamma > 220
    assert result.image.dtype == np.uint8
    # gamma 0.2 applied as v ** (1 / 0.2): darkens
    assert result.image[0, 0] == round(255 * (round(255 * 0.5) / 255) ** 5)
    dim = to_radiograph(np.linspace(0, 1, 64).reshape(8, 8))
    assert not dim.gamma_applied
    assert dim.image[0, 0] == 255 and dim.image[-1, -1] == 0  # full transmission is black, as in a radiograph
    logged = to_radiograph(np.linspace(0.01, 1, 64).reshape(8, 8), mode="log")
    assert logged.image[0, 0] == 255 and logged.image[-1, -1] == 0
    with pytest.raises(ValueError):
        to_radiograph(bright, mode="linear")
