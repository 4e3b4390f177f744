"""DICOM SR (highdicom TID 1500 Measurement Report) with the severity numbers of one radiograph.

Content (each group references the source image; the lung groups also reference their SEG segment):

- image group (TID 1501), finding Pneumonia (SCT 233604007) at the lungs: Probability (DCM 122157,
  ``{probability}``, 0-1), Pneumonia ratio of both lungs (``%``), Severity score total (``{score}``, 0-8), and the
  qualitative evaluation Pneumonia = Present/Absent (DLNet probability at or above the classification threshold);
- one planar-ROI group (TID 1410) per lung, finding site right lung (SCT 3341006) / left lung (SCT 44029006):
  Pneumonia ratio (``%``) and Severity score (``{score}``, 0-4);
- "Qualitative Evaluations" (TID 1500 row 12) with a Comment: the "not for clinical use" statement.

Values are those of ``pneumonitor analyze``'s ``results.csv`` (probability to 1e-6, ratios to 0.01 %). When the
analysis measured its uncertainty, the probability, the ratios and the total score carry TID 1419 measurement
properties: upper/lower measurement uncertainty = the distance to the ends of the interval of ``results.csv``
(``pneumonia_probability_low/high``, ratio +- z SD, ``score_total_low/high``).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from operators.dicom_common import (
    CHEST_RADIOGRAPH,
    LEFT_LUNG,
    LUNG,
    MANUFACTURER,
    MODEL_NAME,
    NOT_FOR_CLINICAL_USE,
    PERCENT,
    PNEUMONIA,
    PNEUMONIA_PROBABILITY,
    PNEUMONIA_RATIO,
    PROBABILITY_UNIT,
    RIGHT_LUNG,
    SCORE_UNIT,
    SEVERITY_SCORE,
    SOFTWARE_VERSION,
    derivation_source,
    new_instance,
)
from operators.dicom_writer import DICOMWriterOperator
from operators.records import CaseRecord

__all__ = ["DICOMSRWriterOperator"]

#: TID 1500 row 12 concept
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
#: a stable device UID for the observer context (same software version -> same UID)
DEVICE_UID = generate_uid(entropy_srcs=[MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION])


class DICOMSRWriterOperator(DICOMWriterOperator):
    """Comprehensive 3D SR holding a TID 1500 measurement report (module docstring); needs the record's SEG.

    Named ports: see :class:`operators.dicom_writer.DICOMWriterOperator` (``kind = "sr"``).
    """

    kind = "sr"

    def build(self, record: CaseRecord) -> Dataset:
        """The SR of one record with severity and a built SEG (``record.objects["seg"]``)."""
        import highdicom as hd

        seg = record.objects["seg"]
        row = record.analysis.severity.as_row()
        source = derivation_source(record.dataset)
        algorithm = hd.sr.AlgorithmIdentification(name="pneumonitor", version=SOFTWARE_VERSION)

        spread = record.analysis.uncertainty or {}
        z = float(spread.get("interval_z", 1.96))

        def measurement(name, value, unit, low=None, high=None) -> hd.sr.Measurement:
            # the uncertainty of pneumonitor analyze as TID 1419 upper/lower measurement uncertainty (distances
            # from the value to the ends of its interval)
            properties = None
            if low is not None and high is not None:
                properties = hd.sr.MeasurementProperties(
                    upper_measurement_uncertainty=round(float(high) - float(value), 6),
                    lower_measurement_uncertainty=round(float(value) - float(low), 6),
                )
            return hd.sr.Measurement(
                name=name, value=float(value), unit=unit, algorithm_id=algorithm, properties=properties
            )

        def ratio_interval(side: str) -> tuple[float | None, float | None]:
            if f"ratio_{side}_sd" not in spread:
                return None, None
            value, sd = float(row[f"ratio_{side}"]), float(spread[f"ratio_{side}_sd"])
            return max(0.0, value - z * sd), min(100.0, value + z * sd)

        image_group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Pneumonia assessment"),
            finding_type=PNEUMONIA,
            finding_sites=[hd.sr.FindingSite(anatomic_location=LUNG)],
            algorithm_id=algorithm,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            measurements=[
                measurement(PNEUMONIA_PROBABILITY, row["pneumonia_probability"], PROBABILITY_UNIT,
                            spread.get("pneumonia_probability_low"), spread.get("pneumonia_probability_high")),
                measurement(PNEUMONIA_RATIO, row["ratio_total"], PERCENT, *ratio_interval("total")),
                measurement(SEVERITY_SCORE, row["score_total"], SCORE_UNIT,
                            spread.get("score_total_low"), spread.get("score_total_high")),
            ],
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(
                    name=PNEUMONIA, value=codes.SCT.Present if row["positive"] else codes.SCT.Absent
                )
            ],
        )
        lung_groups = []
        for segment_number, (lung, side) in enumerate(((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")), start=1):
            lung_groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{lung.meaning}"),
                    referenced_segment=hd.sr.ReferencedSegmentationFrame(
                        sop_class_uid=seg.SOPClassUID,
                        sop_instance_uid=seg.SOPInstanceUID,
                        segment_number=segment_number,
                        frame_number=segment_number,
                        source_image=hd.sr.SourceImageForSegmentation.from_source_image(source),
                    ),
                    finding_type=PNEUMONIA,
                    finding_sites=[hd.sr.FindingSite(anatomic_location=lung)],
                    algorithm_id=algorithm,
                    measurements=[
                        measurement(PNEUMONIA_RATIO, row[f"ratio_{side}"], PERCENT, *ratio_interval(side)),
                        measurement(SEVERITY_SCORE, row[f"score_{side}"], SCORE_UNIT),
                    ],
                )
            )
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=DEVICE_UID, name="pneumonitor", manufacturer_name=MANUFACTURER, model_name=MODEL_NAME
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=CHEST_RADIOGRAPH,
            imaging_measurements=[image_group, *lung_groups],
        )
        report[0].ContentSequence.append(_not_for_clinical_use_statement())
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source, seg],
            content=report,
            **new_instance("sr"),
            is_complete=True,
            is_final=False,
            is_verified=False,
        )
        sr.SeriesDescription = f"pneumonitor severity SR - {NOT_FOR_CLINICAL_USE}"
        _keep_segment_references_only(sr, seg.SOPInstanceUID)
        return sr


def _not_for_clinical_use_statement() -> Dataset:
    """TID 1500 row "Qualitative Evaluations" (UMLS C0034375) holding a TEXT Comment with the disclaimer
    (highdicom's MeasurementReport has no argument for this optional row)."""
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = [
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=f"{NOT_FOR_CLINICAL_USE}: automated research result (pneumonitor {SOFTWARE_VERSION}), "
            "not reviewed by a physician.",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    ]
    return container


def _keep_segment_references_only(sr: Dataset, seg_uid: str) -> None:
    """Drop Referenced Frame Number where Referenced Segment Number references the SEG.

    PS3.3 C.18.3 (IMAGE content item): the two are mutually exclusive, and the reference is to a whole segment;
    highdicom's planar-ROI template writes both.
    """
    stack = list(sr.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        for reference in item.get("ReferencedSOPSequence", []):
            if reference.get("ReferencedSOPInstanceUID") == seg_uid and "ReferencedSegmentNumber" in reference:
                if "ReferencedFrameNumber" in reference:
                    del reference.ReferencedFrameNumber
        stack.extend(item.get("ContentSequence", []))
