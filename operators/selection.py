"""Loading DICOM studies and selecting the frontal chest radiographs in them.

Both operators extend the MONAI Deploy SDK's: :class:`CXRDataLoaderOperator` is ``DICOMDataLoaderOperator`` that
reports files it cannot read instead of stopping on them (and does not fail on an empty folder);
:class:`CXRSeriesSelectorOperator` is ``DICOMSeriesSelectorOperator`` with series rules for Modality CR/DX plus an
instance-level frontal-view rule (ViewPosition is an instance attribute the SDK's series rules cannot see).
Every instance that is not selected becomes a skipped :class:`~operators.records.CaseRecord` with its reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, OperatorSpec
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from operators.dicom_common import uid_problem
from operators.records import CaseRecord
from pneumonitor.io import LATERAL_VIEW_POSITIONS, RADIOGRAPH_MODALITIES

logger = logging.getLogger(__name__)

__all__ = ["CXRDataLoaderOperator", "CXRSeriesSelectorOperator", "CXR_SELECTION_RULES", "frontal_view_problem",
           "identity_problem"]

#: SDK selection rules: every CR or DX series of each study (the view is checked per instance).
CXR_SELECTION_RULES = json.dumps(
    {
        "selections": [
            {
                "name": "chest radiograph",
                "conditions": {"Modality": f"(?i)^({'|'.join(RADIOGRAPH_MODALITIES)})$"},
            }
        ]
    }
)


class CXRDataLoaderOperator(DICOMDataLoaderOperator):
    """``DICOMDataLoaderOperator`` that skips unreadable files with a reason and accepts an empty folder.

    Named inputs:
        input_folder: optional folder path overriding ``input_folder`` (the SDK's port).
    Named outputs:
        dicom_study_list: ``list[DICOMStudy]`` (the SDK's port; empty when nothing readable was found).
        unreadable: ``list[CaseRecord]``, one skipped record per file that is not readable DICOM.
    """

    def __init__(self, fragment: Fragment, *args: Any, input_folder: Path, **kwargs: Any) -> None:
        self.unreadable: list[CaseRecord] = []
        super().__init__(fragment, *args, input_folder=Path(input_folder), must_load=False, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        super().setup(spec)
        spec.output("unreadable").condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context) -> None:
        try:  # the SDK's optional port overrides the constructor's folder
            received = op_input.receive(self.input_name)
        except Exception:  # noqa: BLE001 - nothing connected to the optional port
            received = None
        folder = Path(received) if received and Path(received).is_dir() else Path(self.input_path)
        if not folder.is_dir():
            logger.error("input folder %s does not exist", folder)
            studies: list = []
        else:
            studies = self.load_data_to_studies(folder)
            if not studies:
                logger.error("no DICOM study found in %s", folder)
        op_output.emit(studies, self.output_name)
        op_output.emit(list(self.unreadable), "unreadable")

    def readable_files(self, files: list[str]) -> list[str]:
        """The files whose DICOM header parses; each other file becomes a skipped record in ``self.unreadable``."""
        import pydicom

        keep = []
        for name in sorted(files):
            path = Path(name)
            try:
                pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:  # InvalidDicomError, EOFError, OSError, ... on non-DICOM or cut files
                reason = f"{path.name} is not a readable DICOM file ({type(exc).__name__}: {exc})"
                logger.warning("skipped %s: %s", path, reason)
                self.unreadable.append(CaseRecord(source=path, status="skipped", reason=reason))
                continue
            keep.append(name)
        return keep

    def _load_data(self, files: list[str]):  # noqa: D401 - SDK hook
        """The SDK's loader on the readable files only (it would stop on a truncated header)."""
        self.unreadable = []
        return super()._load_data(self.readable_files(files))


def frontal_view_problem(dataset: Any) -> str | None:
    """Why an instance is not a frontal view (``None`` when it is PA/AP or the view is not recorded).

    A missing ViewPosition is accepted: many CR/DX exports leave it empty and frontal is the common case.
    """
    view = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if view in LATERAL_VIEW_POSITIONS or view.startswith("LAT"):
        return f"lateral view (ViewPosition {view}); only frontal PA/AP views are analysed"
    return None


def identity_problem(dataset: Any) -> str | None:
    """Why an instance's Study/Series/SOP Instance UIDs cannot be used (``None`` when all are valid UIDs).

    The study UID names the output folder and all three are copied into the derived objects.
    """
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if (problem := uid_problem(keyword, dataset.get(keyword, ""))) is not None:
            return problem
    return None


class CXRSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """Select frontal CR/DX chest radiographs: SDK series rules on Modality, then the view of each instance.

    Named inputs:
        dicom_study_list: ``list[DICOMStudy]`` from the data loader.
        unreadable: ``list[CaseRecord]`` of files the loader could not read (optional; passed through).
    Named outputs:
        cases: ``list[CaseRecord]``, one per instance in the studies (selected ones ``ok``, others ``skipped``
            with the reason), followed by the passed-through unreadable files.
    """

    def __init__(self, fragment: Fragment, *args: Any, rules: str = CXR_SELECTION_RULES, **kwargs: Any) -> None:
        super().__init__(fragment, *args, rules=rules, all_matched=True, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name_study_list)
        spec.input("unreadable").condition(ConditionType.NONE)
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        studies = op_input.receive(self.input_name_study_list) or []
        unreadable = op_input.receive("unreadable") or []
        op_output.emit(self.select(studies) + list(unreadable), "cases")

    def select(self, studies: list) -> list[CaseRecord]:
        """One record per SOP instance in ``studies``; see the class docstring. Pure apart from logging."""
        selected_series = set()
        for study_selection in self.filter(self._load_rules(), studies, all_matched=True):
            for selection in study_selection.selected_series:
                selected_series.add(id(selection.series))
        records: list[CaseRecord] = []
        for study in studies:
            for series in study.get_all_series():
                for instance in series.get_sop_instances():
                    dataset = instance.get_native_sop_instance()
                    record = CaseRecord(
                        source=Path(str(getattr(dataset, "filename", "") or "")),
                        study_instance_uid=str(study.StudyInstanceUID),
                        series_instance_uid=str(series.SeriesInstanceUID),
                        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
                        dataset=dataset,
                    )
                    if (problem := identity_problem(dataset)) is not None:
                        record.skip(problem)
                    elif id(series) not in selected_series:
                        modality = str(dataset.get("Modality", "") or "missing")
                        record.skip(
                            f"modality {modality}; only chest radiographs ({'/'.join(RADIOGRAPH_MODALITIES)}) "
                            "are analysed"
                        )
                    elif (problem := frontal_view_problem(dataset)) is not None:
                        record.skip(problem)
                    if not record.ok:
                        logger.warning("skipped %s: %s", record.source, record.reason)
                    records.append(record)
        logger.info("selected %d of %d instance(s)", sum(r.ok for r in records), len(records))
        return records
