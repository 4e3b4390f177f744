"""Cone-beam forward projector (line integrals), one torch implementation for CPU and CUDA.

Method: Joseph's method for the PA/AP geometry of :mod:`pneumonitor.duality.drr.geometry`. All rays travel mainly along
the y axis of the volume, so each ray crosses every coronal slice (``y = const``) once. At slice ``j`` the ray of
detector pixel (r, c) hits the point ``x = x_s + t_j (x_c - x_s)``, ``z = z_s + t_j (z_r - z_s)`` with
``t_j = (y_j - y_s) / (y_det - y_s)``: x depends only on the column and z only on the row, so the bilinear
interpolation of the slice at all detector pixels is separable (two 1-D linear interpolations, gathers on the
volume's grid). The line integral is the sum over slices times the path length per slice,
``dy * |D - S| / |y_det - y_s|``, constant along each ray. Outside the volume the values are 0.

Work is O(H x W x Ny x C) gathers with no per-ray sample lists (unlike a generic ray marcher or Siddon's method
that materialise [rays, samples] tensors), which is what makes it fast on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pneumonitor.duality.drr.geometry import ConeBeamGeometry


def _detector_window(geometry: ConeBeamGeometry, shape_zyx: Sequence[int], spacing, origin) -> tuple[int, int, int, int]:
    """Rows [r0, r1) and columns [c0, c1) of the detector that rays through the volume's box can reach."""
    lo = np.asarray(origin, dtype=float) - 0.5 * np.asarray(spacing[::-1])
    hi = lo + np.asarray(shape_zyx[::-1], dtype=float) * np.asarray(spacing[::-1])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    rc = geometry.project_points(corners)
    r0 = max(0, int(np.floor(rc[:, 0].min())) - 1)
    r1 = min(geometry.rows, int(np.ceil(rc[:, 0].max())) + 2)
    c0 = max(0, int(np.floor(rc[:, 1].min())) - 1)
    c1 = min(geometry.cols, int(np.ceil(rc[:, 1].max())) + 2)
    return r0, max(r0, r1), c0, max(c0, c1)


def _axis_interpolation(coord: torch.Tensor, size_padded: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower index, upper index and weight of linear interpolation at padded-grid coordinates ``coord``.

    Coordinates outside the padded grid land on its zero border, so rays leaving the volume add nothing.
    """
    coord = coord.clamp(0.0, size_padded - 1.0)
    low = coord.floor().clamp(max=size_padded - 2).long()
    return low, low + 1, (coord - low).to(torch.float32)


@torch.no_grad()
def project(
    channels: torch.Tensor,
    spacing: Sequence[float],
    origin: Sequence[float],
    geometry: ConeBeamGeometry,
    progress: bool = False,
) -> torch.Tensor:
    """Line integrals of each channel of a volume along the rays of ``geometry``.

    Args:
        channels: float32 ``[C, Z, Y, X]`` on any device (values per mm of path, e.g. density in g/cm^3 or 0/1 masks),
            LPS-oriented as :class:`pneumonitor.duality.ct.CTVolume`.
        spacing: ``(sz, sy, sx)`` voxel size in mm. origin: LPS ``(x, y, z)`` mm of voxel ``[0, 0, 0]``.
        geometry: cone-beam geometry with its isocentre set.
        progress: show a tqdm bar over slices.
    Returns:
        float32 ``[C, rows, cols]`` on the same device: integral of the channel along each ray, in channel-units x mm.
    """
    if channels.ndim != 4:
        raise ValueError(f"channels must be [C, Z, Y, X], got shape {tuple(channels.shape)}")
    device = channels.device
    n_channels, nz, ny, nx = channels.shape
    out = torch.zeros((n_channels, geometry.rows, geometry.cols), dtype=torch.float32, device=device)
    r0, r1, c0, c1 = _detector_window(geometry, (nz, ny, nx), spacing, origin)
    if r1 <= r0 or c1 <= c0:
        return out
    sz, sy, sx = (float(s) for s in spacing)
    ox, oy, oz = (float(o) for o in origin)
    source = geometry.source_mm()
    dy = geometry.detector_y_mm() - source[1]
    f64 = dict(dtype=torch.float64, device=device)
    xs = torch.as_tensor(geometry.pixel_x_mm()[c0:c1], **f64)
    zs = torch.as_tensor(geometry.pixel_z_mm()[r0:r1], **f64)
    ys = oy + sy * torch.arange(ny, **f64)
    t = (ys - source[1]) / dy  # [Ny] fraction of the way from source to detector at each slice
    # +1: coordinates on the grid padded by one zero voxel on each side in z and x.
    kx = (source[0] + t[:, None] * (xs[None, :] - source[0]) - ox) / sx + 1.0  # [Ny, Wc]
    kz = (source[2] + t[:, None] * (zs[None, :] - source[2]) - oz) / sz + 1.0  # [Ny, Hc]
    x_lo, x_hi, x_w = _axis_interpolation(kx, nx + 2)
    z_lo, z_hi, z_w = _axis_interpolation(kz, nz + 2)
    # [Y, Zp, C, Xp]: the x gather works on one small slice, the z gather then copies whole contiguous rows.
    volume = torch.zeros((ny, nz + 2, n_channels, nx + 2), dtype=torch.float32, device=device)
    volume[:, 1:-1, :, 1:-1] = channels.permute(2, 1, 0, 3)
    occupied = torch.any(channels != 0, dim=(0, 1, 3)).cpu().numpy()  # empty slices (air outside the body) add 0
    acc = torch.zeros((r1 - r0, n_channels, c1 - c0), dtype=torch.float32, device=device)  # [Hc, C, Wc]
    slices = np.flatnonzero(occupied)
    if progress:
        from tqdm import tqdm

        slices = tqdm(slices, desc="projecting", unit="slice", leave=False)
    for j in slices:
        plane = volume[j]  # [Zp, C, Xp]
        columns = torch.lerp(plane.index_select(2, x_lo[j]), plane.index_select(2, x_hi[j]), x_w[j])  # [Zp, C, Wc]
        acc += torch.lerp(columns.index_select(0, z_lo[j]), columns.index_select(0, z_hi[j]), z_w[j][:, None, None])
    ray_length = torch.sqrt((xs[None, :] - source[0]) ** 2 + (zs[:, None] - source[2]) ** 2 + dy**2)
    step = (sy * ray_length / abs(dy)).to(torch.float32)  # path length per slice along each ray, mm
    out[:, r0:r1, c0:c1] = acc.permute(1, 0, 2) * step
    return out
