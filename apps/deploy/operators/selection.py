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
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, OperatorSpec
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from operators.dicom_common import uid_problem
from operators.records import CaseRecord
from pneumonitor.reading import RADIOGRAPH_MODALITIES, dicom_view_problem

logger = logging.getLogger(__name__)

__all__ = ["CXRDataLoaderOperator", "CXRSeriesSelectorOperator", "CXR_SELECTION_RULES", "frontal_view_problem",
           "identity_problem", "dropped_instance_reason", "flag_duplicates_and_shared_studies"]

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
        self._unlistable: list[CaseRecord] = []
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

    def _list_files(self, path, files: list[str]) -> None:  # noqa: D401 - SDK hook
        """The SDK's recursive listing, visiting each real folder and file once (a directory symlink loop listed one
        radiograph 41 times); a folder that cannot be listed becomes a skipped record instead of an exception."""
        self._unlistable = []
        folders: set[str] = set()
        listed: set[str] = set()

        def walk(folder: str) -> None:
            real = os.path.realpath(folder)
            if real in folders:
                logger.warning("not listed again: %s is %s, already listed (a symlink loop or a second link)",
                               folder, real)
                return
            folders.add(real)
            try:
                names = sorted(os.listdir(folder))
            except OSError as exc:
                reason = f"folder {folder} could not be listed ({type(exc).__name__}: {exc})"
                logger.warning("skipped %s: %s", folder, reason)
                self._unlistable.append(CaseRecord(source=Path(folder), status="skipped", reason=reason))
                return
            for name in names:
                item = os.path.join(folder, name)
                if os.path.isdir(item):
                    walk(item)
                elif os.path.realpath(item) in listed:
                    logger.warning("not listed again: %s is a link to a file already listed", item)
                else:
                    listed.add(os.path.realpath(item))
                    files.append(item)

        walk(str(path))

    def _load_data(self, files: list[str]):  # noqa: D401 - SDK hook
        """The SDK's loader on the readable files only (it would stop on a truncated header); every readable file
        it does not keep in a study (no UIDs, a DICOMDIR, not an image) becomes a skipped record with the reason."""
        self.unreadable = list(self._unlistable)
        readable = self.readable_files(files)
        studies = super()._load_data(readable)
        kept = {
            str(getattr(instance.get_native_sop_instance(), "filename", ""))
            for study in studies
            for series in study.get_all_series()
            for instance in series.get_sop_instances()
        }
        for name in readable:
            if name not in kept:
                reason = dropped_instance_reason(Path(name))
                logger.warning("skipped %s: %s", name, reason)
                self.unreadable.append(CaseRecord(source=Path(name), status="skipped", reason=reason))
        return studies


#: Media Storage Directory Storage: a DICOMDIR
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def dropped_instance_reason(path: Path) -> str:
    """Why the SDK's loader keeps a readable DICOM file in no study (the loader only logs it)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        return f"{path.name} is a DICOMDIR (a media directory), not an image"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword, "") or ""):
            return f"{path.name} has no {keyword}: not an analysable DICOM instance"
    sop_class = ds.SOPClassUID
    if str(sop_class) in DICOMDataLoaderOperator.SOP_CLASSES_TO_IGNORE:
        return f"{path.name} is not an image (SOP class {getattr(sop_class, 'name', sop_class)})"
    return f"{path.name} was not kept by the DICOM loader (another instance has its position in its series)"


def frontal_view_problem(dataset: Any) -> str | None:
    """Why an instance is not a frontal view (``None`` when it is PA/AP or the view is not recorded).

    The header rules of ``pneumonitor analyze`` (:func:`pneumonitor.reading.dicom_view_problem`: ViewPosition /
    ViewCodeSequence allowlist, PatientOrientation, FOR PROCESSING). A header silent about the view is accepted here;
    the image QC gate looks at the pixels later (:class:`operators.inference.PneumoniaInferenceOperator`).
    """
    return dicom_view_problem(dataset)


def identity_problem(dataset: Any) -> str | None:
    """Why an instance's Study/Series/SOP Instance UIDs cannot be used (``None`` when all are valid UIDs).

    The study UID names the output folder and all three are copied into the derived objects.
    """
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if (problem := uid_problem(keyword, dataset.get(keyword, ""))) is not None:
            return problem
    for keyword in COPIED_IDENTITY:  # the derived objects copy these; a control character makes them invalid
        value = str(dataset.get(keyword, "") or "")
        if any(ord(c) < 32 and c != "\x1b" for c in value):
            return f"{keyword} {value[:64]!r} contains control characters, which DICOM text values cannot hold"
    return None


#: patient and study attributes the SEG, SR and SC copy from their source
COPIED_IDENTITY = ("PatientID", "PatientName", "AccessionNumber", "StudyID", "ReferringPhysicianName",
                   "StudyDescription")


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
                    records.append(record)
        flag_duplicates_and_shared_studies(records)
        for record in records:
            if not record.ok:
                logger.warning("skipped %s: %s", record.source, record.reason)
        logger.info("selected %d of %d instance(s)", sum(r.ok for r in records), len(records))
        return records


def flag_duplicates_and_shared_studies(records: list[CaseRecord]) -> list[str]:
    """Warn about a SOP instance found in several files and a study whose images name several patients.

    Both are analysed as they are (each derived object copies its own source's patient), but a reader of the log
    must know: a duplicate is stored twice, and a study shared by patients points at a mix-up upstream.
    Returns the warnings.
    """
    patients: dict[str, set[str]] = defaultdict(set)
    files: dict[str, list[Path]] = defaultdict(list)
    for record in records:
        if record.ok:
            patients[record.study_instance_uid].add(str(record.dataset.get("PatientID", "") or ""))
            files[record.sop_instance_uid].append(record.source)
    warnings = [
        f"study {study} holds images of {len(ids)} patients (PatientID {', '.join(repr(i) for i in sorted(ids))})"
        for study, ids in patients.items()
        if len(ids) > 1
    ]
    warnings += [
        f"SOP instance {sop} is in {len(paths)} files ({', '.join(str(p) for p in paths)}); each is analysed"
        for sop, paths in files.items()
        if len(paths) > 1
    ]
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
