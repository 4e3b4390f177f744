"""Reading chest radiographs: DICOM CR/DX, PNG/JPEG (8/16-bit, gray or RGB) and 2-D NIfTI.

Every reader returns a :class:`Radiograph` whose ``pixels`` are a float32 array of shape ``(H, W)`` (rows, columns),
values in ``[0, 1]``, in MONOCHROME2 polarity (air and lung fields dark, bone bright), exactly as a reader looks at
the film. Inputs that are not usable frontal chest radiographs raise :class:`UnsupportedInput` with a reason meant
for the user; callers turn it into a "skipped" row.

DICOM pixel pipeline (PS3.3 C.11): stored values -> Modality LUT (Rescale Slope/Intercept or LUT) -> VOI LUT
(or Window Center/Width; the first window when several are given; without either, a 0.5-99.5 percentile window
over the non-padding pixels, so that padding, collimator edges and burned-in text do not set the contrast) ->
min-max to [0, 1] -> MONOCHROME1 / Presentation LUT INVERSE inversion -> PixelPaddingValue pixels set to 0 ->
flips from PatientOrientation so that the patient's right is on the image left and the head at the top.

DICOM semantic rules (:func:`dicom_view_problem`, checked before decoding): the view must be frontal by an
allowlist (ViewPosition PA/AP, ViewCodeSequence postero-anterior/antero-posterior, PatientOrientation whose row
direction is not anterior/posterior); FOR PROCESSING (raw detector) images are refused. When the header says
nothing about the view, the image QC network (``pneumonitor.qc``) decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "Radiograph",
    "UnsupportedInput",
    "read_radiograph",
    "read_dicom_radiograph",
    "read_bitmap_radiograph",
    "read_nifti_radiograph",
    "find_inputs",
    "MIN_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "max_image_pixels",
    "RADIOGRAPH_MODALITIES",
    "LATERAL_VIEW_POSITIONS",
    "FRONTAL_VIEW_POSITIONS",
    "dicom_view_problem",
    "to_stored_grid",
]

#: Images whose shorter side is below this many pixels are refused: the networks see 224-448 px and CLAHE tiles.
MIN_IMAGE_SIDE = 64
#: Images with more pixels are refused before their pixel data is decoded (a 10000x10000 PNG compresses to 129 kB
#: and would need gigabytes); the largest detectors give ~18 MP. ``PNEUMONITOR_MAX_PIXELS`` overrides it.
MAX_IMAGE_PIXELS = 50_000_000
#: DICOM modalities accepted as projection radiographs.
RADIOGRAPH_MODALITIES = ("CR", "DX")
#: ViewPosition values (PS3.3 C.8.11.5.1.1, plus common vendor spellings) that mean a lateral projection.
LATERAL_VIEW_POSITIONS = ("LL", "RL", "LLD", "RLD", "LAT", "LATERAL", "LLAT", "RLAT", "XTABLE LAT")
#: ViewPosition first words accepted as frontal ("AP SUPINE", "PA ERECT" and the like are kept): an allowlist.
FRONTAL_VIEW_POSITIONS = ("PA", "AP")
#: ViewCodeSequence codes (CID 4010; SNOMED CT and the older SRT codes) of the frontal projections.
FRONTAL_VIEW_CODES = {
    "399348003": "postero-anterior",
    "R-10214": "postero-anterior",
    "399182009": "antero-posterior",
    "R-10206": "antero-posterior",
}
#: Window used when a DICOM has no VOI LUT/window: percentiles of the non-padding pixels.
PERCENTILE_WINDOW = (0.5, 99.5)

BITMAP_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", "")

#: DICOM attributes kept for writers (SEG/SR) and monitoring, by output key.
IDENTITY_ATTRIBUTES = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "patient_age": "PatientAge",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "study_id": "StudyID",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "modality": "Modality",
    "view_position": "ViewPosition",
    "body_part_examined": "BodyPartExamined",
    "manufacturer": "Manufacturer",
}


class UnsupportedInput(ValueError):
    """The input cannot be analysed; ``str(exc)`` is the reason shown to the user."""


@dataclass
class Radiograph:
    """A frontal chest radiograph ready for preprocessing.

    Attributes:
        pixels: float32 ``(H, W)`` in ``[0, 1]``, MONOCHROME2 (higher = more attenuation = brighter).
        source: the file it was read from.
        meta: identity and acquisition attributes (see ``IDENTITY_ATTRIBUTES``) plus ``acquisition_datetime``
            (ISO 8601 string or ``""``), ``pixel_spacing`` (``(row_mm, col_mm)`` or ``None``), ``photometric``,
            ``bits_stored`` and ``format`` (``dicom``/``png``/``jpeg``/``nifti``). Missing values are ``""``.
        dataset: the pydicom ``Dataset`` (pixel data dropped) for DICOM input, so writers can copy patient/study
            modules; ``None`` otherwise.
    """

    pixels: np.ndarray
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


def _scale_to_unit(array: np.ndarray, what: str) -> np.ndarray:
    """Min-max scale to float32 [0, 1]; refuse NaN/inf and constant images (they carry no anatomy)."""
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise UnsupportedInput(f"{what} contains NaN or infinite pixel values")
    low, high = float(array.min()), float(array.max())
    if high <= low:
        raise UnsupportedInput(f"{what} is constant (all pixels {low:g}): no image content")
    return ((array - low) / (high - low)).astype(np.float32)


def max_image_pixels() -> int:
    """The pixel cap: ``$PNEUMONITOR_MAX_PIXELS`` when set to a positive integer, else :data:`MAX_IMAGE_PIXELS`."""
    import os

    value = os.environ.get("PNEUMONITOR_MAX_PIXELS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return MAX_IMAGE_PIXELS


def _check_pixel_count(rows: int, columns: int, what: str) -> None:
    """Refuse an image larger than the pixel cap; called with header dimensions, before anything is decoded."""
    cap = max_image_pixels()
    if rows * columns > cap:
        raise UnsupportedInput(
            f"{what} is too large ({rows}x{columns} px = {rows * columns / 1e6:.1f} MP; at most {cap / 1e6:g} MP, "
            "set PNEUMONITOR_MAX_PIXELS to change)"
        )


def _nifti_size_problem(path: Path, image: Any) -> str | None:
    """Why the voxel data a NIfTI header declares cannot be in the file (``None`` when it can).

    For ``.nii.gz`` the uncompressed size is the gzip trailer's ISIZE (RFC 1952; single-member files, as nibabel
    and ITK write them), so a 4 kB header declaring gigabytes is refused before anything is allocated.
    """
    header = image.header
    offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))  # a loaded header's vox_offset is reset
    declared = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        if size < 18:
            return f"is {size} bytes, too short for a gzip file"
        with path.open("rb") as handle:
            handle.seek(-4, 2)
            size = int.from_bytes(handle.read(4), "little")
        if declared < 2**32 and declared > size:
            return f"declares {declared} bytes of header and voxel data but decompresses to {size}"
    elif declared > size:
        return f"declares {declared} bytes of header and voxel data but the file has {size}"
    return None


def _check_size(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2:
        raise UnsupportedInput(f"{what} has shape {shape}; a single 2-D radiograph is expected")
    if min(shape) < MIN_IMAGE_SIDE:
        raise UnsupportedInput(f"{what} is too small ({shape[0]}x{shape[1]} px; at least {MIN_IMAGE_SIDE} px per side)")


def _dicom_datetime(ds: Any) -> str:
    """Best acquisition time as ISO 8601: AcquisitionDateTime, else Acquisition/Content/Study/Series Date+Time."""
    from pydicom.valuerep import DT

    value = str(ds.get("AcquisitionDateTime", "") or "").strip()
    if value:
        try:
            return DT(value).isoformat()
        except ValueError:
            logger.debug("unparsable AcquisitionDateTime %r", value)
    for date_key, time_key in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        date = str(ds.get(date_key, "") or "").strip()
        if len(date) == 8 and date.isdigit():
            time = str(ds.get(time_key, "") or "").strip().split(".")[0]
            time = (time + "000000")[:6] if time.isdigit() else "000000"
            return f"{date[:4]}-{date[4:6]}-{date[6:8]}T{time[:2]}:{time[2:4]}:{time[4:6]}"
    return ""


def _dicom_pixel_spacing(ds: Any) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            try:
                return float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
    return None


def dicom_view_problem(ds: Any) -> str | None:
    """Why a CR/DX header is not a frontal presentation image, or ``None`` (also when the header is silent).

    Allowlist, not denylist: a ViewPosition or a ViewCodeSequence that is present must be PA/AP; a PatientOrientation
    whose row direction is anterior/posterior means a lateral projection; FOR PROCESSING images are raw detector
    data that no reader looks at. Shared by :func:`read_dicom_radiograph` and the Deploy app's series selection.
    """
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    if intent == "FOR PROCESSING":
        return "a FOR PROCESSING (raw detector) image; only FOR PRESENTATION images are analysed"
    view = " ".join(str(ds.get("ViewPosition", "") or "").replace("_", " ").upper().split())
    if view:
        if view in LATERAL_VIEW_POSITIONS or view.startswith("LAT") or "LATERAL" in view:
            return f"lateral view (ViewPosition {view}); only frontal PA/AP views are analysed"
        if view.replace("-", " ").split()[0] not in FRONTAL_VIEW_POSITIONS:
            return f"not a frontal view (ViewPosition {view}); only frontal PA/AP views are analysed"
    for item in ds.get("ViewCodeSequence", None) or []:
        code = str(item.get("CodeValue", "") or "").strip()
        meaning = str(item.get("CodeMeaning", "") or "").strip()
        text = meaning.lower().replace(" ", "-")
        if "lateral" in text:
            return f"lateral view (ViewCodeSequence {code} {meaning!r}); only frontal PA/AP views are analysed"
        frontal = code in FRONTAL_VIEW_CODES or "antero-posterior" in text or "postero-anterior" in text
        if not frontal or "oblique" in text:
            return f"not a frontal view (ViewCodeSequence {code} {meaning!r}); only frontal PA/AP views are analysed"
    rows_toward = _patient_orientation(ds)[0]
    if rows_toward[:1] in ("A", "P"):
        orientation = "\\".join(_patient_orientation(ds))
        return f"lateral view (PatientOrientation {orientation}); only frontal PA/AP views are analysed"
    return None


def _patient_orientation(ds: Any) -> tuple[str, str]:
    """(direction of the rows, direction of the columns) from PatientOrientation, ``("", "")`` when absent."""
    value = ds.get("PatientOrientation", None)
    if value is None or isinstance(value, str):
        parts = [p for p in str(value or "").split("\\") if p]
    else:
        parts = [str(p) for p in value]
    parts = [p.strip().upper() for p in parts]
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


_OPPOSITE = str.maketrans("LRAPHF", "RLPAFH")


def _orient(pixels: np.ndarray, ds: Any, what: str) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Flip so the rows run toward the patient's left (patient's right on the image left) and the columns toward
    the feet, as a frontal chest is read; an AP film stored unflipped would otherwise swap right and left lung.

    Returns the pixels, the warnings (an absent PatientOrientation leaves the image as stored, with a warning) and
    ``{"orientation_flips": axes flipped, "patient_orientation": the orientation of the returned pixels}`` so that
    writers can put results back on the stored grid (:func:`to_stored_grid`).
    """
    rows_toward, columns_toward = _patient_orientation(ds)
    if not rows_toward:
        return pixels, ["PatientOrientation absent: patient's right assumed on the image left"], {
            "orientation_flips": (), "patient_orientation": ()}
    notes, flips = [], []
    oriented = [rows_toward, columns_toward]
    if rows_toward[:1] == "R":
        pixels = pixels[:, ::-1]
        flips.append("columns")
        oriented[0] = rows_toward.translate(_OPPOSITE)
        notes.append(f"flipped left-right (PatientOrientation {rows_toward}\\{columns_toward})")
    if columns_toward[:1] == "H":
        pixels = pixels[::-1, :]
        flips.append("rows")
        oriented[1] = columns_toward.translate(_OPPOSITE)
        notes.append(f"flipped top-bottom (PatientOrientation {rows_toward}\\{columns_toward})")
    for note in notes:
        logger.info("%s: %s", what, note)
    return np.ascontiguousarray(pixels), notes, {"orientation_flips": tuple(flips), "patient_orientation": tuple(oriented)}


def to_stored_grid(array: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """A result on the radiograph's pixel grid (mask, map) put back on the stored DICOM grid: undoes the
    PatientOrientation flips of :func:`read_dicom_radiograph` (``meta["orientation_flips"]``); SEG frames must
    lie on the stored pixels of their source image."""
    flips = meta.get("orientation_flips") or ()
    if "columns" in flips:
        array = array[:, ::-1]
    if "rows" in flips:
        array = array[::-1, :]
    return np.ascontiguousarray(array)


def _padding_mask(stored: np.ndarray, ds: Any) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or within [value, PixelPaddingRangeLimit]): outside the image proper."""
    if "PixelPaddingValue" not in ds:
        return None
    values = [int(ds.PixelPaddingValue)]
    if "PixelPaddingRangeLimit" in ds:
        values.append(int(ds.PixelPaddingRangeLimit))
    mask = (stored >= min(values)) & (stored <= max(values))
    return mask if mask.any() and not mask.all() else None


def _percentile_window(values: np.ndarray, padding: np.ndarray | None, what: str) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles of the non-padding pixels (a few extreme pixels - collimator edges,
    burned-in text, markers - would otherwise compress the lung contrast); min-max when that range is empty."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise UnsupportedInput(f"{what} contains NaN or infinite pixel values")
    content = values[~padding] if padding is not None else values
    low, high = np.percentile(content, PERCENTILE_WINDOW)
    if high > low:
        values = np.clip(values, low, high)
    return values


def _pixel_data_length_problem(ds: Any) -> str | None:
    """Why native (uncompressed) Pixel Data does not fit Rows x Columns x SamplesPerPixel x BitsAllocated, or ``None``.

    pydicom decodes too long data by dropping the excess, so a header that disagrees with its pixel data gives
    stripes that the networks score as severe pneumonia. Encapsulated (compressed) data is checked by its decoder.
    """
    try:
        from pydicom.pixels.utils import get_expected_length
    except ImportError:  # pydicom < 3 (the MONAI Label environment)
        from pydicom.pixel_data_handlers.util import get_expected_length

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or (syntax is not None and syntax.is_encapsulated):
        return None
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return f"the image pixel module is incomplete ({type(exc).__name__}: {exc})"
    actual = len(ds.PixelData)
    if actual not in (expected, expected + expected % 2):  # odd lengths are padded to even (PS3.5 8.1.1)
        return (
            f"pixel data could not be decoded: it is {actual} bytes but the header (Rows {ds.get('Rows')}, Columns "
            f"{ds.get('Columns')}, SamplesPerPixel {ds.get('SamplesPerPixel')}, BitsAllocated "
            f"{ds.get('BitsAllocated')}) needs {expected} ("
            + ("a truncated file, or " if actual < expected else "")
            + "header and pixel data disagree)"
        )
    return None


def read_dicom_radiograph(path: str | Path) -> Radiograph:
    """Read a CR/DX DICOM file into a :class:`Radiograph`.

    Raises:
        UnsupportedInput: unreadable or truncated file, not an image, wrong modality, lateral view, multi-frame,
            too small, pixel data that cannot be decoded (the reason names the transfer syntax).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3 (the MONAI Label environment, see apps/label/setup_env.sh)
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    path = Path(path)
    what = f"DICOM file {path.name}"
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise UnsupportedInput(f"{path.name} is not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on truncated/garbled files
        raise UnsupportedInput(f"{path.name} could not be read as DICOM ({type(exc).__name__}: {exc})") from exc

    modality = str(ds.get("Modality", "") or "").upper()
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = str(getattr(ds.get("SOPClassUID", ""), "name", "") or ds.get("SOPClassUID", "unknown"))
        if "Rows" in ds and "Columns" in ds:  # an image header whose pixels never come: the file was cut short
            raise UnsupportedInput(f"{what} is truncated: it has an image header (Rows, Columns) but ends before its "
                                   f"pixel data (SOP class {kind})")
        raise UnsupportedInput(f"{what} has no pixel data (SOP class {kind}, modality {modality or 'unknown'})")
    if modality not in RADIOGRAPH_MODALITIES:
        raise UnsupportedInput(
            f"{what} has modality {modality or 'missing'}; only chest radiographs ({'/'.join(RADIOGRAPH_MODALITIES)}) "
            "are analysed"
        )
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    problem = dicom_view_problem(ds)
    if problem is not None:
        raise UnsupportedInput(f"{what}: {problem}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedInput(f"{what} has {frames} frames; a single-frame radiograph is expected")
    _check_size((int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)), what)
    _check_pixel_count(int(ds.Rows), int(ds.Columns), what)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInput(f"{what} has PhotometricInterpretation {photometric or 'missing'}; grayscale expected")
    problem = _pixel_data_length_problem(ds)
    if problem is not None:
        raise UnsupportedInput(f"{what}: {problem}")

    try:
        stored = ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name = getattr(syntax, "name", syntax)
        raise UnsupportedInput(f"{what}: pixel data could not be decoded (transfer syntax {name}): {exc}") from exc
    _check_size(stored.shape, what)

    padding = _padding_mask(stored, ds)
    values = apply_modality_lut(stored, ds)
    # apply_voi_lut uses the VOI LUT Sequence when present, else the first Window Center/Width; else a no-op.
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
    else:
        values = _percentile_window(values, padding, what)
    pixels = _scale_to_unit(values, what)
    # MONOCHROME1 and Presentation LUT Shape INVERSE both say "the minimum displays white" (PS3.3 C.8.11.6.1.2
    # pairs them on DX); either one alone inverts, both together are one statement, not a double inversion.
    presentation_lut = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric == "MONOCHROME1" or presentation_lut == "INVERSE":
        pixels = 1.0 - pixels  # bring it to MONOCHROME2.
    if padding is not None:
        pixels[padding] = 0.0  # padding is no anatomy: show it as background, not as a bright frame
    pixels, warnings, orientation = _orient(pixels, ds, what)

    meta: dict[str, Any] = {key: str(ds.get(tag, "") or "") for key, tag in IDENTITY_ATTRIBUTES.items()}
    meta.update(
        acquisition_datetime=_dicom_datetime(ds),
        pixel_spacing=_dicom_pixel_spacing(ds),
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        format="dicom",
        warnings=warnings,
        **orientation,
    )
    meta["view_position"] = view
    meta["modality"] = modality
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return Radiograph(pixels=pixels, source=path, meta=meta, dataset=header)


def read_bitmap_radiograph(path: str | Path) -> Radiograph:
    """Read a PNG/JPEG radiograph: 8-bit divided by 255, 16-bit min-max scaled, RGB/RGBA converted to luminance.

    A 16-bit PNG rarely uses its full range (10-14 bit detectors), hence min-max instead of /65535.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    what = f"image {path.name}"
    try:
        with Image.open(path) as img:
            _check_pixel_count(img.height, img.width, what)  # from the header; nothing is decoded yet
            img.load()
            mode = img.mode
            if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                img = img.convert("L")  # ITU-R 601-2 luma
                mode = "L"
            array = np.asarray(img)
    except UnsupportedInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnsupportedInput(f"{path.name} could not be read as an image ({exc})") from exc
    _check_size(array.shape, what)
    if mode in ("L", "1"):
        pixels = array.astype(np.float32) / (1.0 if mode == "1" else 255.0)
        if float(pixels.max()) <= float(pixels.min()):
            raise UnsupportedInput(f"{what} is constant: no image content")
    else:  # "I;16", "I", "F": high bit depth
        pixels = _scale_to_unit(array, what)
    suffix = path.suffix.lower()
    meta: dict[str, Any] = {key: "" for key in IDENTITY_ATTRIBUTES}
    meta.update(
        acquisition_datetime="",
        pixel_spacing=None,
        photometric="MONOCHROME2",
        bits_stored=16 if array.dtype == np.uint16 else 8,
        format="png" if suffix == ".png" else "jpeg",
    )
    return Radiograph(pixels=pixels.astype(np.float32), source=path, meta=meta)


def read_nifti_radiograph(path: str | Path) -> Radiograph:
    """Read a 2-D NIfTI radiograph (a 3-D file with one slice is accepted), assumed MONOCHROME2.

    Read with nibabel (SimpleITK silently turns NaN voxels into 0, which would hide corrupt data). The NIfTI
    ``(i, j)`` axes are ``(x, y)``; the array is transposed to ``(rows, columns) = (y, x)``, the orientation
    SimpleITK/ITK would give, and the voxel sizes become ``pixel_spacing``.
    """
    import nibabel

    path = Path(path)
    what = f"NIfTI file {path.name}"
    try:
        image = nibabel.load(str(path))  # the header only; the voxels are read below, after the checks
        shape = tuple(int(n) for n in image.header.get_data_shape())
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 1):
            raise UnsupportedInput(f"{what} has shape {shape}; a single-channel 2-D radiograph is expected")
        _check_pixel_count(shape[1], shape[0], what)
        problem = _nifti_size_problem(path, image)
        if problem is not None:
            raise UnsupportedInput(f"{what} {problem}")
        array = np.asarray(image.dataobj)
    except UnsupportedInput:
        raise
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors... on corrupt files
        raise UnsupportedInput(f"{path.name} could not be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    zooms = tuple(float(z) for z in image.header.get_zooms())
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype.names is not None or array.ndim != 2:
        raise UnsupportedInput(f"{what} has shape {array.shape}; a single-channel 2-D radiograph is expected")
    array = array.T
    _check_size(array.shape, what)
    meta: dict[str, Any] = {key: "" for key in IDENTITY_ATTRIBUTES}
    meta.update(
        acquisition_datetime="",
        pixel_spacing=(zooms[1], zooms[0]) if len(zooms) >= 2 else None,
        photometric="MONOCHROME2",
        bits_stored=int(array.dtype.itemsize * 8),
        format="nifti",
    )
    return Radiograph(pixels=_scale_to_unit(array, what), source=path, meta=meta)


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_radiograph(path: str | Path) -> Radiograph:
    """Read any supported radiograph, dispatching on the file content (DICOM preamble) and suffix.

    Raises:
        UnsupportedInput: with the reason the file is skipped.
    """
    path = Path(path)
    if path.is_dir():  # find_inputs passes on a named folder without radiographs, or one it could not list
        try:
            next(path.iterdir(), None)
        except OSError as exc:
            raise UnsupportedInput(f"folder {path} could not be listed ({type(exc).__name__}: {exc})") from exc
        raise UnsupportedInput(f"folder {path} holds no radiograph file (.dcm, .png, .jpg, .nii, DICM files)")
    if not path.is_file():
        raise UnsupportedInput(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise UnsupportedInput(f"{path.name} is empty (0 bytes)")
    if _is_nifti(path):
        return read_nifti_radiograph(path)
    if path.suffix.lower() in BITMAP_SUFFIXES:
        return read_bitmap_radiograph(path)
    return read_dicom_radiograph(path)


def _looks_like_input(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in BITMAP_SUFFIXES or suffix in (".dcm", ".dicom") or _is_nifti(path):
        return True
    if suffix == "":  # PACS exports often have no suffix: accept files with the DICM magic
        try:
            with path.open("rb") as handle:
                handle.seek(128)
                return handle.read(4) == b"DICM"
        except OSError:
            return False
    return False


def find_inputs(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into the sorted list of candidate radiograph files.

    Files named explicitly are always kept (so that unsupported ones are reported, not silently dropped);
    inside folders only files that look like images (by suffix or DICM magic) are taken, following folder links
    once per real folder (a link loop lists nothing twice). A named folder without such files, and a sub-folder
    that cannot be listed, are kept themselves, so that they get a row with the reason. A file reached twice (by
    links or by naming it again) is kept once, under the path it was first given.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        found.extend(_folder_inputs(path) if path.is_dir() else [path])
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve() if path.exists() else path.absolute(), path)
    return list(unique.values())


def _folder_inputs(folder: Path) -> list[Path]:
    import os

    found: list[Path] = []
    unlisted: list[Path] = []
    seen: set[str] = set()
    for root, folders, files in os.walk(folder, followlinks=True, onerror=lambda exc: unlisted.append(Path(exc.filename))):
        real = os.path.realpath(root)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        found.extend(p for name in files if (p := Path(root) / name).is_file() and _looks_like_input(p))
    return (sorted(found) + sorted(unlisted)) or [folder]
