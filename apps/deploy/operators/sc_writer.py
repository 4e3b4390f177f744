"""DICOM Secondary Capture of the overlay (:func:`pneumonitor.inference.overlays.render_overlay`) for viewers without SEG
support: the radiograph with the right (green) and left (blue) lung contours, the pneumonia region in red, and a
burned-in caption with the probability, the scores and the "not for clinical use" statement."""

from __future__ import annotations

from pydicom.dataset import Dataset

from operators.dicom_common import NOT_FOR_CLINICAL_USE, derivation_source, new_instance
from operators.dicom_writer import DICOMWriterOperator
from operators.records import CaseRecord
from pneumonitor.inference.overlays import render_overlay

__all__ = ["DICOMOverlayWriterOperator", "overlay_caption"]


def overlay_caption(row: dict) -> str:
    """Burned-in text from a severity row (``SeverityResult.as_row()``, plus the uncertainty columns when
    measured), two lines so it fits small images."""
    spread = ""
    if "pneumonia_probability_low" in row:
        spread = (
            f"\nrange: p {row['pneumonia_probability_low']:.2f}-{row['pneumonia_probability_high']:.2f}, score "
            f"{row['score_total_low']}-{row['score_total_high']}" + ("  UNCERTAIN" if row["uncertain"] else "")
        )
    return (
        f"p={row['pneumonia_probability']:.2f}  score {row['score_total']}/8 (R {row['score_right']}, "
        f"L {row['score_left']})  ratio {row['ratio_total']:.1f}%{spread}\n{NOT_FOR_CLINICAL_USE}"
    )


class DICOMOverlayWriterOperator(DICOMWriterOperator):
    """RGB Secondary Capture Image at the source image's size, derived from the source (patient/study copied).

    Named ports: see :class:`operators.dicom_writer.DICOMWriterOperator` (``kind = "sc"``).
    """

    kind = "sc"

    def build(self, record: CaseRecord) -> Dataset:
        """The overlay SC of one record with severity: ``(H, W, 3)`` uint8 RGB pixels."""
        import highdicom as hd

        severity = record.analysis.severity
        radiograph = record.radiograph
        pixels = render_overlay(
            radiograph.pixels, severity.right_lung, severity.left_lung, severity.pneumonia_mask,
            overlay_caption({**severity.as_row(), **(record.analysis.uncertainty or {})}),
        )
        source = derivation_source(record.dataset)
        # the overlay is drawn on the radiograph as pneumonitor.reading oriented it (PatientOrientation flips applied)
        orientation = tuple(radiograph.meta.get("patient_orientation") or source.get("PatientOrientation") or ())
        if len(orientation) != 2:
            # the convention of the whole pipeline (pneumonitor.severity): a frontal view displayed with the
            # patient's right on the image left, so columns run to the patient's Left and rows to the Feet
            orientation = ("L", "F")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            patient_orientation=orientation,
            **new_instance("sc"),
            pixel_spacing=radiograph.meta.get("pixel_spacing"),
        )
        sc.SeriesDescription = f"pneumonitor overlay - {NOT_FOR_CLINICAL_USE}"
        sc.BurnedInAnnotation = "YES"
        # General Series Laterality is Type 2C; the chest is unpaired, so empty unless the source recorded one
        sc.Laterality = source.get("Laterality", None)
        sc.ImageComments = NOT_FOR_CLINICAL_USE
        sc.DerivationDescription = "pneumonitor lung contours and pneumonia region over the source radiograph"
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        sc.SourceImageSequence = [reference]
        return sc
