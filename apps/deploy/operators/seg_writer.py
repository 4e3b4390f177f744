"""DICOM Segmentation (highdicom) of the right lung, left lung and pneumonia region of one radiograph."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from operators.dicom_common import (
    ABNORMAL_STRUCTURE,
    ANATOMICAL_STRUCTURE,
    LEFT_LUNG,
    LUNG,
    MODEL_NAME,
    NOT_FOR_CLINICAL_USE,
    PNEUMONIA,
    RIGHT_LUNG,
    SOFTWARE_VERSION,
    algorithm_identification,
    derivation_source,
    new_instance,
)
from operators.dicom_writer import DICOMWriterOperator
from operators.records import CaseRecord
from pneumonitor.reading import to_stored_grid

__all__ = ["DICOMSegWriterOperator", "SEGMENTS"]

#: segment number -> (label, property category, property type, anatomic region or None)
SEGMENTS = {
    1: ("Right lung", ANATOMICAL_STRUCTURE, RIGHT_LUNG, None),
    2: ("Left lung", ANATOMICAL_STRUCTURE, LEFT_LUNG, None),
    3: ("Pneumonia", ABNORMAL_STRUCTURE, PNEUMONIA, LUNG),
}


class DICOMSegWriterOperator(DICOMWriterOperator):
    """Binary DICOM SEG with three segments (see ``SEGMENTS``), one frame each, at the source image's size.

    Frames are kept even when empty (a negative image has an empty pneumonia segment), so frame ``n`` is always
    segment ``n``; the SR references the lung segments by segment number. The source image is referenced
    (Referenced Series Sequence / Source Image Sequence) and its patient and study attributes are copied; UIDs are new.

    Named ports: see :class:`operators.dicom_writer.DICOMWriterOperator` (``kind = "seg"``).
    """

    kind = "seg"

    def build(self, record: CaseRecord) -> Dataset:
        """The SEG of one record with severity. Masks come from ``record.analysis.severity``: ``(H, W)`` bool."""
        import highdicom as hd

        severity = record.analysis.severity
        source = derivation_source(record.dataset)
        # A projection radiograph has no frame of reference, so the SEG's Pixel Measures functional group is
        # optional (PS3.3 A.51.5.1); highdicom would derive it from Pixel Spacing without the Slice Thickness its own
        # reader requires. The SEG is displayed on its source image, whose spacing applies.
        geometry = source.copy()
        for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
            if keyword in geometry:
                delattr(geometry, keyword)
        # back on the stored pixels: pneumonitor.reading flips images whose PatientOrientation says so
        meta = record.radiograph.meta if record.radiograph is not None else {}
        masks = np.stack(
            [to_stored_grid(m, meta) for m in (severity.right_lung, severity.left_lung, severity.pneumonia_mask)], axis=-1
        )[None]
        if masks.shape[1:3] != (int(source.Rows), int(source.Columns)):
            raise ValueError(f"masks {masks.shape[1:3]} differ from the image size {source.Rows}x{source.Columns}")
        algorithm = algorithm_identification()
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=category,
                segmented_property_type=property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                anatomic_regions=[region] if region is not None else None,
            )
            for number, (label, category, property_type, region) in SEGMENTS.items()
        ]
        seg = hd.seg.Segmentation(
            source_images=[geometry],
            pixel_array=masks.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **new_instance("seg"),
            manufacturer_model_name=MODEL_NAME,
            software_versions=SOFTWARE_VERSION,
            device_serial_number="0",
            content_label="LUNGS",
            content_description=f"Lungs and pneumonia - {NOT_FOR_CLINICAL_USE}",
            omit_empty_frames=False,
        )
        seg.SeriesDescription = f"pneumonitor lungs+pneumonia SEG - {NOT_FOR_CLINICAL_USE}"
        # General Image module, Type 2C for images without Image Orientation (Patient): copy or leave empty
        seg.PatientOrientation = source.get("PatientOrientation", None)
        return seg
