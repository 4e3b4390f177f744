"""Chest CT on the CT side of the CT-X-ray duality (docs/ct-drr.md, paper Sec. IV-C).

Everything here works on one internal orientation, :class:`CTVolume`:

* ``hu``: float32 array ``[Z, Y, X]`` in Hounsfield units, resampled to the **LPS** patient frame: index ``x``
  increases towards the patient's Left, ``y`` towards Posterior, ``z`` towards Superior (so ``hu[0]`` is the most
  inferior axial slice). Values below -1024 (e.g. -2048 outside the reconstruction circle) are set to -1024 (air).
* ``spacing``: voxel size ``(sz, sy, sx)`` in mm; ``origin``: LPS position ``(x, y, z)`` in mm of voxel ``[0, 0, 0]``.

Contents:

* reading: DICOM series (SimpleITK/GDCM, slices sorted by position, HU from the rescale slope/intercept) and NIfTI
  (or any 3-D format SimpleITK reads); non-HU input (e.g. an 8-bit windowed volume) is refused with
  :class:`UnsupportedCT` and a reason;
* body-part segmentation exactly as the paper: material decomposition by HU, ``NOT air OR soft OR bone``, hole
  filling slice-wise and in 3-D, largest connected component; :func:`apply_body_mask` sets everything outside to air;
* lungs: from a label map (TotalSegmentator lobe ids by default) or a classical HU method;
* infection: ground glass (-750..-300 HU) and consolidation (-300..+50 HU) inside the lungs, with the lung boundary
  eroded; the CT pneumonia ratio per lung and in total (percent);
* virtual patients: smooth textured ground-glass / consolidation lesions implanted inside the lobes of a real CT,
  growing or shrinking over time points, with the exact lesion masks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: HU thresholds of the material decomposition (DeepDRR's thresholding): air <= -800 < soft tissue <= 350 < bone.
AIR_MAX_HU = -800.0
BONE_MIN_HU = 350.0
#: Infection HU ranges (paper ref. [35]): ground glass [-750, -300), consolidation [-300, +50].
GROUND_GLASS_HU = (-750.0, -300.0)
CONSOLIDATION_HU = (-300.0, 50.0)
#: TotalSegmentator "total" class ids of the lung lobes (also the ids in the shipped ``chest_ct_labels.nii.gz``).
RIGHT_LOBE_IDS = (12, 13, 14)
LEFT_LOBE_IDS = (10, 11)
AIR_HU = -1024.0


class UnsupportedCT(ValueError):
    """The input is not a CT volume in Hounsfield units that this module can use; ``str(err)`` says why."""


@dataclasses.dataclass
class CTVolume:
    """A CT volume in HU, LPS-oriented.

    Attributes:
        hu: float32 ``[Z, Y, X]`` Hounsfield units, index x -> patient left, y -> posterior, z -> superior.
        spacing: voxel size ``(sz, sy, sx)`` in mm.
        origin: LPS position ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``.
        source: where it was read from (empty for generated volumes).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def centre(self) -> np.ndarray:
        """LPS position (x, y, z) in mm of the volume centre."""
        size_xyz = np.array(self.shape[::-1], dtype=float) - 1.0
        return np.asarray(self.origin, dtype=float) + size_xyz / 2.0 * np.asarray(self.spacing[::-1])

    def with_hu(self, hu: np.ndarray) -> CTVolume:
        """A copy sharing the geometry, with other voxel values of the same shape."""
        if hu.shape != self.hu.shape:
            raise ValueError(f"shape {hu.shape} differs from the volume's {self.hu.shape}")
        return dataclasses.replace(self, hu=np.asarray(hu, dtype=np.float32))

    def to_sitk(self, array: np.ndarray | None = None):
        """This volume (or ``array`` on its grid) as a SimpleITK image with LPS identity direction."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu if array is None else array)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        return image


# ----------------------------------------------------------------------------------------------------- reading


def _read_sitk(path: Path):
    import SimpleITK as sitk

    if path.is_dir():
        return _read_dicom_series(path)
    if not path.is_file():
        raise UnsupportedCT(f"{path}: no such file or directory")
    try:
        import pydicom

        if pydicom.misc.is_dicom(str(path)):
            # One file of a series: read the whole series it belongs to.
            uid = pydicom.dcmread(str(path), stop_before_pixels=True).get("SeriesInstanceUID")
            return _read_dicom_series(path.parent, series_uid=uid)
    except ImportError:  # pragma: no cover - pydicom is a dependency
        pass
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise UnsupportedCT(f"{path}: not a readable image volume ({str(err).strip().splitlines()[-1]})") from None


def _read_dicom_series(folder: Path, series_uid: str | None = None):
    import pydicom
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise UnsupportedCT(f"{folder}: no DICOM series found")
    if series_uid is None:
        # The series with the most slices is the volume; others are usually scouts or dose reports.
        series_uid = max(series_ids, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)))
    files = reader.GetGDCMSeriesFileNames(str(folder), series_uid)  # sorted by slice position (GDCM IPP sorter)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    modality = str(header.get("Modality", ""))
    if modality != "CT":
        raise UnsupportedCT(f"{folder}: series {series_uid} has modality {modality or 'unknown'!r}, not CT")
    if len(files) < 2:
        raise UnsupportedCT(f"{folder}: series {series_uid} has a single slice; a CT volume needs several")
    reader.SetFileNames(files)
    image = reader.Execute()  # applies RescaleSlope / RescaleIntercept: voxel values are HU
    return image


def check_hounsfield(hu: np.ndarray, dtype: np.dtype | None = None, name: str = "volume") -> None:
    """Raise :class:`UnsupportedCT` unless ``hu`` looks like a CT in Hounsfield units.

    A chest CT in HU holds air near -1000 (outside the body, in the lungs) and soft tissue near 0 to +100; an 8-bit
    or windowed volume (values 0..255) does not, and rendering or thresholding it as HU would give nonsense.
    """
    if dtype is not None and np.dtype(dtype) == np.uint8:
        raise UnsupportedCT(
            f"{name}: 8-bit voxels (0..255) are a display-windowed volume, not Hounsfield units; "
            "use the original CT in HU"
        )
    lo, hi = float(np.min(hu)), float(np.max(hu))
    air_fraction = float(np.mean(hu <= -900))
    if lo > -900 or air_fraction < 0.01 or hi < 0:
        raise UnsupportedCT(
            f"{name}: values span [{lo:.0f}, {hi:.0f}] with {100 * air_fraction:.2f} % of voxels <= -900; "
            "a chest CT in Hounsfield units contains air at about -1000 HU. Is it windowed or not in HU?"
        )


def read_ct(path: str | Path) -> CTVolume:
    """Read a CT volume in HU from a DICOM series folder, one file of a series, or a NIfTI/NRRD/MHA file.

    Returns:
        :class:`CTVolume` in LPS orientation (see the module docstring), float32 HU clipped below at -1024.

    Raises:
        UnsupportedCT: not readable, not 3-D, not a CT, or not in HU (the message says which).
    """
    import SimpleITK as sitk

    path = Path(path)
    image = _read_sitk(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise UnsupportedCT(
            f"{path}: a CT volume must be a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    if min(image.GetSize()) < 2:
        raise UnsupportedCT(f"{path}: size {image.GetSize()} is not a volume")
    pixel_dtype = sitk.GetArrayViewFromImage(image).dtype
    image = sitk.DICOMOrient(image, "LPS")
    direction = np.reshape(image.GetDirection(), (3, 3))
    if not np.allclose(direction, np.eye(3), atol=1e-3):
        # Oblique acquisitions: resample onto an axis-aligned LPS grid so that projection stays separable.
        image = _resample_axis_aligned(image)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    check_hounsfield(hu, dtype=pixel_dtype, name=str(path))
    np.maximum(hu, AIR_HU, out=hu)
    return CTVolume(
        hu=hu,
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        source=str(path),
    )


def _resample_axis_aligned(image):
    import SimpleITK as sitk

    size = np.array(image.GetSize())
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners.astype(float)])
    spacing = np.full(3, min(image.GetSpacing()))
    lo, hi = points.min(0), points.max(0)
    new_size = np.ceil((hi - lo) / spacing).astype(int) + 1
    return sitk.Resample(
        image, new_size.tolist(), sitk.Transform(), sitk.sitkLinear, lo.tolist(), spacing.tolist(),
        np.eye(3).ravel().tolist(), AIR_HU,
    )


def read_labels(path: str | Path, like: CTVolume) -> np.ndarray:
    """Read a label map onto the grid of ``like`` (LPS, nearest neighbour). Returns int32 ``[Z, Y, X]``."""
    import SimpleITK as sitk

    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    reference = like.to_sitk(np.zeros(like.shape, np.uint8))
    same_grid = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-2)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-3)
    )
    if not same_grid:
        image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(image).astype(np.int32)


def write_volume(array: np.ndarray, like: CTVolume, path: str | Path) -> Path:
    """Write ``array`` (on the grid of ``like``) as NIfTI/NRRD via SimpleITK, atomically (temp name, then rename)."""
    import SimpleITK as sitk

    from pneumonitor.publishing import atomic_path

    with atomic_path(path) as tmp:  # the temporary name keeps the format suffix SimpleITK picks the writer by
        sitk.WriteImage(like.to_sitk(array), str(tmp), useCompression=True)
    return Path(path)


def resample_to_shape(ct: CTVolume, shape: Sequence[int]) -> CTVolume:
    """Resample ``ct`` (linear) to ``shape`` = (Z, Y, X) voxels covering the same extent; used for small tests."""
    zoom = np.asarray(shape, dtype=float) / np.asarray(ct.shape, dtype=float)
    hu = ndimage.zoom(ct.hu, zoom, order=1, mode="nearest").astype(np.float32)
    spacing = tuple(float(s) for s in np.asarray(ct.spacing) * np.asarray(ct.shape) / np.asarray(hu.shape))
    first_centre = np.asarray(ct.origin) - 0.5 * np.asarray(ct.spacing[::-1]) + 0.5 * np.asarray(spacing[::-1])
    return CTVolume(hu=hu, spacing=spacing, origin=tuple(first_centre.tolist()), source=ct.source)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ body segmentation


def decompose_materials(
    hu: np.ndarray, air_max_hu: float = AIR_MAX_HU, bone_min_hu: float = BONE_MIN_HU
) -> dict[str, np.ndarray]:
    """Material masks by HU thresholding (DeepDRR): air <= ``air_max_hu`` < soft tissue <= ``bone_min_hu`` < bone.

    Returns:
        ``{"air", "soft_tissue", "bone"}`` -> bool arrays shaped like ``hu``; every voxel is in exactly one.
    """
    if not air_max_hu < bone_min_hu:
        raise ValueError(f"need air_max_hu < bone_min_hu, got {air_max_hu} and {bone_min_hu}")
    air = hu <= air_max_hu
    bone = hu > bone_min_hu
    soft = ~air & ~bone
    return {"air": air, "soft_tissue": soft, "bone": bone}


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """An ellipsoidal structuring element of ``radius_mm`` on an anisotropic voxel grid ``spacing`` (mm)."""
    half = [max(0, int(np.floor(radius_mm / s))) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s / max(radius_mm, 1e-6)) ** 2 for g, s in zip(grids, spacing))
    return dist2 <= 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume (empty stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_slicewise(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """2-D hole filling of every slice along ``axis`` (axial for axis 0)."""
    filled = np.moveaxis(mask.copy(), axis, 0)
    for i in range(filled.shape[0]):
        filled[i] = ndimage.binary_fill_holes(filled[i])
    return np.moveaxis(filled, 0, axis)


def body_mask(
    hu: np.ndarray, air_max_hu: float = AIR_MAX_HU, bone_min_hu: float = BONE_MIN_HU
) -> np.ndarray:
    """Body-part segmentation as the paper (Sec. IV-C): removes the table and other objects.

    ``mask = NOT air OR soft tissue OR bone``, then hole filling slice-wise (axial, which fills the lungs) and in 3-D,
    then the largest connected component (the patient; the table is separated from it by air).

    Args:
        hu: ``[Z, Y, X]`` HU volume.
    Returns:
        bool ``[Z, Y, X]``, True inside the body (lungs included).
    """
    materials = decompose_materials(hu, air_max_hu, bone_min_hu)
    mask = ~materials["air"] | materials["soft_tissue"] | materials["bone"]
    mask = fill_holes_slicewise(mask, axis=0)
    mask = ndimage.binary_fill_holes(mask)
    return largest_component(mask)


def apply_body_mask(ct: CTVolume, mask: np.ndarray) -> CTVolume:
    """Keep the body: voxels outside ``mask`` become air (-1024 HU).

    The paper "multiplies the CT by the mask"; multiplying HU by 0 would turn the outside into water (0 HU), so the
    multiplication is applied to the attenuation (HU + 1024), which is what removes the table from the projection.
    """
    return ct.with_hu(np.where(mask, ct.hu, AIR_HU))


# ------------------------------------------------------------------------------------------------------- lungs


@dataclasses.dataclass
class LungMasks:
    """Boolean ``[Z, Y, X]`` masks of the patient's right and left lung (patient right = low x in LPS)."""

    right: np.ndarray
    left: np.ndarray

    @property
    def both(self) -> np.ndarray:
        return self.right | self.left


def lungs_from_labels(
    labels: np.ndarray, right_ids: Sequence[int] = RIGHT_LOBE_IDS, left_ids: Sequence[int] = LEFT_LOBE_IDS
) -> LungMasks:
    """Lung masks from a label map (default: TotalSegmentator lobe ids). Raises ValueError if a lung is empty."""
    right = np.isin(labels, list(right_ids))
    left = np.isin(labels, list(left_ids))
    if not right.any() or not left.any():
        raise ValueError(
            f"label map has no voxels with right-lung ids {tuple(right_ids)} or left-lung ids {tuple(left_ids)}"
        )
    return LungMasks(right=right, left=left)


def segment_lungs(ct: CTVolume, threshold_hu: float = -320.0, closing_mm: float = 6.0) -> LungMasks:
    """Classical HU-based lung segmentation.

    Low-density voxels (< ``threshold_hu``) inside the body, not connected to the outside air, keeping the components
    larger than 5 % of the largest; holes (vessels, dense infection) are filled slice-wise after a closing of
    ``closing_mm`` so that consolidation inside the lung belongs to it. Right/left split: each axial slice at the
    body's centre of mass in x (patient right is low x). Consolidation touching the chest wall can be lost — pass a
    label map (:func:`lungs_from_labels`) when exact lungs matter.
    """
    body = body_mask(ct.hu)
    low = (ct.hu < threshold_hu) & body
    labels, count = ndimage.label(low)
    if count == 0:
        raise ValueError("no low-density region inside the body: no lungs found")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= 0.05 * sizes.max())
    lungs = np.isin(labels, keep)
    lungs = ndimage.binary_closing(lungs, structure=_ball(closing_mm, ct.spacing))
    lungs = fill_holes_slicewise(lungs, axis=0) & body
    xs = np.arange(ct.shape[2], dtype=float)
    midline = np.empty(ct.shape[0])
    for z in range(ct.shape[0]):
        columns = body[z].sum(axis=0)
        midline[z] = (columns * xs).sum() / max(columns.sum(), 1)
    right_side = xs[None, None, :] < midline[:, None, None]
    return LungMasks(right=lungs & right_side, left=lungs & ~right_side)


# ------------------------------------------------------------------------------------------------- infection


@dataclasses.dataclass
class InfectionResult:
    """CT infection segmentation and the pneumonia ratio (percent of lung volume, 0-100)."""

    ground_glass: np.ndarray
    consolidation: np.ndarray
    ratio_total: float
    ratio_right: float
    ratio_left: float
    infection_ml: float
    lung_ml: float

    @property
    def infection(self) -> np.ndarray:
        return self.ground_glass | self.consolidation


def segment_infection(
    ct: CTVolume,
    lungs: LungMasks,
    erosion_mm: float = 3.0,
    vessel_radius_mm: float = 2.5,
    ground_glass_hu: tuple[float, float] = GROUND_GLASS_HU,
    consolidation_hu: tuple[float, float] = CONSOLIDATION_HU,
) -> InfectionResult:
    """Ground glass ∪ consolidation inside the lungs and the CT pneumonia ratio per lung and in total.

    1. candidates: voxels in ``ground_glass_hu`` ∪ ``consolidation_hu`` inside the lung eroded by ``erosion_mm``
       (partial-volume voxels at the lung boundary would otherwise count as ground glass);
    2. vessels and bronchial walls, thin tubes, are removed by a morphological opening with a ball of
       ``vessel_radius_mm`` (0 disables it): infection is a blob, normal vessels are not;
    3. the kept regions are grown back by ``erosion_mm`` into the non-eroded lung within the same HU ranges, so that
       peripheral (subpleural) lesions are not cut by the erosion.

    Returns:
        :class:`InfectionResult`; ratios are ``100 * infected voxels / lung voxels`` (NaN for an empty lung).
    """
    lung = lungs.both
    hu = ct.hu
    in_ggo = (hu >= ground_glass_hu[0]) & (hu < ground_glass_hu[1])
    in_cons = (hu >= consolidation_hu[0]) & (hu <= consolidation_hu[1])
    candidates = (in_ggo | in_cons) & lung
    core = candidates
    if erosion_mm > 0:
        core = candidates & ndimage.binary_erosion(lung, structure=_ball(erosion_mm, ct.spacing), border_value=0)
    if vessel_radius_mm > 0:
        core = ndimage.binary_opening(core, structure=_ball(vessel_radius_mm, ct.spacing))
    infection = core
    if erosion_mm > 0:
        infection = ndimage.binary_dilation(core, structure=_ball(erosion_mm, ct.spacing)) & candidates
    ground_glass = infection & in_ggo
    consolidation = infection & in_cons

    def ratio(region: np.ndarray) -> float:
        n = int(region.sum())
        return float("nan") if n == 0 else 100.0 * float((infection & region).sum()) / n

    return InfectionResult(
        ground_glass=ground_glass,
        consolidation=consolidation,
        ratio_total=ratio(lung),
        ratio_right=ratio(lungs.right),
        ratio_left=ratio(lungs.left),
        infection_ml=float(infection.sum()) * ct.voxel_volume_ml,
        lung_ml=float(lung.sum()) * ct.voxel_volume_ml,
    )


def mask_ratio(mask: np.ndarray, lungs: LungMasks) -> dict[str, float]:
    """Percent of each lung covered by ``mask`` (e.g. the exact implanted lesions): keys total/right/left."""

    def ratio(region: np.ndarray) -> float:
        n = int(region.sum())
        return float("nan") if n == 0 else 100.0 * float((mask & region).sum()) / n

    return {"total": ratio(lungs.both), "right": ratio(lungs.right), "left": ratio(lungs.left)}


# ---------------------------------------------------------------------------------------- virtual patients


@dataclasses.dataclass
class LesionField:
    """A smooth random lesion field over a CT's lungs; thresholding it gives nested lesion masks.

    ``extent`` is a float32 ``[Z, Y, X]`` field (0 outside the lungs); the lesion at involvement ``r`` percent is
    ``extent > quantile`` so that exactly ``r`` % of the lung voxels are lesion, and a larger ``r`` always contains a
    smaller one (lesions grow and shrink in place). ``density`` in [0, 1] decides ground glass (low) vs consolidation
    (high) and ``texture`` is a zero-mean HU texture.
    """

    extent: np.ndarray
    density: np.ndarray
    texture: np.ndarray
    lung: np.ndarray

    def mask(self, involvement_percent: float) -> np.ndarray:
        """Boolean lesion mask covering ``involvement_percent`` (0-100) of the lung voxels."""
        if not 0.0 <= involvement_percent <= 100.0:
            raise ValueError(f"involvement must be in [0, 100] percent, got {involvement_percent}")
        values = self.extent[self.lung]
        if involvement_percent <= 0 or values.size == 0:
            return np.zeros_like(self.lung)
        k = int(round(values.size * involvement_percent / 100.0))
        if k <= 0:
            return np.zeros_like(self.lung)
        threshold = np.partition(values, values.size - k)[values.size - k]
        return (self.extent >= threshold) & self.lung


def make_lesion_field(
    ct: CTVolume,
    lungs: LungMasks,
    rng: np.random.Generator,
    n_seeds: int = 6,
    lesion_radius_mm: tuple[float, float] = (25.0, 50.0),
    texture_hu: float = 40.0,
) -> LesionField:
    """Random, smooth, peripheral- and lower-lobe-predominant lesion field inside ``lungs``.

    Seeds are drawn inside the lungs with probability increasing towards the pleura (distance to the lung boundary)
    and towards the lung bases (low z); each adds a Gaussian blob of a random radius in ``lesion_radius_mm``;
    low-frequency noise makes the borders irregular.
    """
    lung = lungs.both
    if not lung.any():
        raise ValueError("empty lung mask: cannot implant lesions")
    spacing = np.asarray(ct.spacing)
    depth_mm = ndimage.distance_transform_edt(lung, sampling=spacing)
    z_idx = np.nonzero(lung.any(axis=(1, 2)))[0]
    z_lo, z_hi = z_idx.min(), z_idx.max()
    zz = np.arange(ct.shape[0])[:, None, None]
    height = (zz - z_lo) / max(z_hi - z_lo, 1)  # 0 at the bases, 1 at the apices
    prior = np.exp(-depth_mm / 15.0) * np.exp(-2.0 * height) * lung
    flat = prior.ravel() / prior.sum()
    seeds = rng.choice(flat.size, size=n_seeds, replace=False, p=flat)
    # Work on a coarse grid (4 mm) for the smooth fields: cheap, and they are smooth anyway.
    coarse = np.maximum(1, np.round(4.0 / spacing).astype(int))
    small_shape = tuple(int(np.ceil(n / c)) for n, c in zip(ct.shape, coarse))
    grid = np.meshgrid(*[np.arange(n) * c * s for n, c, s in zip(small_shape, coarse, spacing)], indexing="ij")
    extent_small = np.zeros(small_shape, np.float32)
    for seed in seeds:
        centre = np.array(np.unravel_index(seed, ct.shape)) * spacing
        radius = rng.uniform(*lesion_radius_mm)
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        extent_small += np.float32(rng.uniform(0.6, 1.0)) * np.exp(-dist2 / (2 * radius**2)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(small_shape).astype(np.float32), sigma=2.0)
    noise /= max(float(noise.std()), 1e-6)
    extent_small *= 1.0 + 0.25 * noise
    density_small = ndimage.gaussian_filter(rng.standard_normal(small_shape).astype(np.float32), sigma=3.0)
    zoom = np.asarray(ct.shape) / np.asarray(small_shape)

    def upsample(a: np.ndarray) -> np.ndarray:
        up = ndimage.zoom(a, zoom, order=1, mode="nearest")
        return up[: ct.shape[0], : ct.shape[1], : ct.shape[2]].astype(np.float32)

    extent = upsample(extent_small) * lung
    density = upsample(density_small)
    density = (density - density.min()) / max(float(density.max() - density.min()), 1e-6)
    # Fine texture: band-passed noise at voxel scale (a few mm), as the mottled look of ground glass.
    texture = ndimage.gaussian_filter(rng.standard_normal(ct.shape).astype(np.float32), sigma=1.0)
    texture *= np.float32(texture_hu / max(float(texture.std()), 1e-6))
    return LesionField(extent=extent.astype(np.float32), density=density, texture=texture, lung=lung)


def implant_lesions(
    ct: CTVolume,
    field: LesionField,
    involvement_percent: float,
    consolidation_fraction: float = 0.3,
) -> tuple[CTVolume, np.ndarray, np.ndarray]:
    """Implant lesions covering ``involvement_percent`` of the lungs into ``ct``.

    Lesion voxels get ground-glass HU in [-700, -350] or, where the field's density is in its top
    ``consolidation_fraction`` and at the lesion core, consolidation HU in [-250, 0], plus texture, clipped so that every
    lesion voxel stays inside the infection HU ranges; existing denser structures (vessels) are kept
    (``max(original, lesion)``). HU change only inside the lungs.

    Returns:
        (new CT, lesion mask bool [Z, Y, X], consolidation mask bool [Z, Y, X] (subset of the lesion)).
    """
    lesion = field.mask(involvement_percent)
    if not lesion.any():
        return ct.with_hu(ct.hu.copy()), lesion, np.zeros_like(lesion)
    # Position inside the lesion: 0 at its border, 1 at its core (the extent field is smooth and peaks at seeds).
    inside = field.extent[lesion]
    border = float(inside.min())
    core_level = (field.extent - border) / max(float(inside.max()) - border, 1e-6)
    density_cut = np.quantile(field.density[lesion], 1.0 - consolidation_fraction) if consolidation_fraction > 0 else 2
    consolidation = lesion & (field.density >= density_cut) & (core_level > 0.15)
    ggo_hu = -700.0 + 350.0 * np.clip(core_level * 0.7 + 0.3 * field.density, 0, 1)
    cons_hu = -250.0 + 250.0 * np.clip(core_level, 0, 1)
    lesion_hu = np.where(consolidation, cons_hu, ggo_hu) + field.texture
    lesion_hu = np.where(
        consolidation, np.clip(lesion_hu, -290.0, 40.0), np.clip(lesion_hu, -740.0, -310.0)
    ).astype(np.float32)
    hu = ct.hu.copy()
    hu[lesion] = np.maximum(hu[lesion], lesion_hu[lesion])
    return ct.with_hu(hu), lesion, consolidation
