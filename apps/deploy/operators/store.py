"""Writing the app's outputs: per study all DICOM objects or none, plus a ``results.csv``/``results.json`` summary.

Layout of the output folder::

    OUT/<StudyInstanceUID>/<nn>-seg.dcm   DICOM SEG (right lung, left lung, pneumonia)
    OUT/<StudyInstanceUID>/<nn>-sr.dcm    DICOM SR (TID 1500 measurement report)
    OUT/<StudyInstanceUID>/<nn>-sc.dcm    Secondary Capture of the overlay
    OUT/results.csv, OUT/results.json     one row per input instance (``pneumonitor analyze``'s columns; the JSON
                                          adds ``seg``/``sr``/``sc`` paths relative to OUT)

``nn`` numbers the analysed radiographs of a study in source-file order. A study folder is written under a
temporary name and renamed when complete (:func:`pneumonitor.publishing.atomic_folder`), so a crash never leaves a
partial study; a study with a ``failed`` record (an object that could not be built) gets no folder, and the failure
is logged with its reason. What a killed run left is removed by the next run into the same folder
(:func:`pneumonitor.publishing.remove_stale_temporaries`: never a live process's).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.dicom_common import uid_problem
from operators.records import CaseRecord
from pneumonitor.inference.analyzer import ImageAnalysis, result_row
from pneumonitor.publishing import atomic_folder, remove_stale_temporaries
from pneumonitor.results import FINDING_COLUMNS, write_results

logger = logging.getLogger(__name__)

__all__ = ["DICOMStoreOperator", "OBJECT_KINDS"]

OBJECT_KINDS = ("seg", "sr", "sc")


class DICOMStoreOperator(Operator):
    """Store each study's objects atomically and write the summary table (module docstring).

    Args:
        output_folder: OUT.
        settings: what ``results.json`` records under ``settings`` (models, thresholds).

    Named inputs:
        cases: ``list[CaseRecord]`` after all writers.
    Named outputs: none (a sink). After ``compute``, ``counts`` holds ``{"ok", "skipped", "failed"}`` numbers.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, output_folder: Path, settings: dict | None = None, **kwargs: Any
    ) -> None:
        self.output_folder = Path(output_folder)
        self.settings = settings or {}
        self.counts: dict[str, int] = {"ok": 0, "skipped": 0, "failed": 0}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("cases")

    def compute(self, op_input, op_output, context) -> None:
        self.store(op_input.receive("cases"))

    def store(self, records: list[CaseRecord]) -> dict[str, int]:
        """Write the studies and the summary; returns the counts per status."""
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_temporaries(self.output_folder):
            logger.info("removed %s, left by an interrupted run", path)
        by_study: dict[str, list[CaseRecord]] = defaultdict(list)
        for record in records:
            if record.status in ("ok", "failed"):
                by_study[record.study_instance_uid].append(record)
        for study_uid, study_records in by_study.items():
            self.store_study(study_uid, sorted(study_records, key=lambda r: (str(r.source), r.sop_instance_uid)))
        rows = [self.row(record) for record in records]
        write_results(rows, self.output_folder, self.settings, json_only=OBJECT_KINDS)
        self.counts = {status: sum(r.status == status for r in records) for status in ("ok", "skipped", "failed")}
        logger.info(
            "%d radiograph(s) analysed, %d skipped, %d failed -> %s",
            self.counts["ok"], self.counts["skipped"], self.counts["failed"], self.output_folder,
        )
        if not records:
            logger.error("no input instances: nothing to analyse")
        elif self.counts["ok"] == 0:
            logger.error("no frontal CR/DX chest radiograph could be analysed (see the reasons above)")
        return self.counts

    def store_study(self, study_uid: str, records: list[CaseRecord]) -> Path | None:
        """All objects of one study's ``ok`` records under ``OUT/<study_uid>``, or nothing if any record failed."""
        failed = [r for r in records if r.status == "failed"]
        if failed:
            for record in records:
                if record.ok:
                    record.fail(f"another image of study {study_uid} failed: {failed[0].reason}")
            logger.error("study %s not written: %s failed: %s", study_uid, failed[0].source, failed[0].reason)
            return None
        missing = [r for r in records if any(kind not in r.objects for kind in OBJECT_KINDS)]
        for record in missing:
            record.fail("not all of SEG, SR and overlay were built")
        if missing:
            logger.error("study %s not written: %s", study_uid, missing[0].reason)
            for record in records:
                if record.ok:
                    record.fail(f"another image of study {study_uid} failed")
            return None
        problem = uid_problem("StudyInstanceUID", study_uid)
        if problem is not None:  # the folder name comes from the header: never build a path from an invalid one
            for record in records:
                record.fail(f"study not written: {problem}")
            logger.error("study %r not written: %s", study_uid, problem)
            return None
        final = self.output_folder / study_uid
        try:
            # a re-run replaces the study's previous outputs as a whole (never a link or a file of that name)
            with atomic_folder(final) as partial:
                for index, record in enumerate(records, start=1):
                    for kind in OBJECT_KINDS:
                        name = f"{index:02d}-{kind}.dcm"
                        record.objects[kind].save_as(partial / name, enforce_file_format=True)
                        record.files[kind] = f"{final.name}/{name}"
        except Exception as exc:  # noqa: BLE001 - disk full, permissions: fail the study, keep going
            for record in records:
                record.fail(f"writing study {study_uid} failed ({type(exc).__name__}: {exc})")
                record.files.clear()
            logger.error("study %s not written: %s", study_uid, records[0].reason)
            return None
        logger.info("study %s: %d radiograph(s) -> %s", study_uid, len(records), final)
        return final

    @staticmethod
    def row(record: CaseRecord) -> dict[str, Any]:
        """The summary row of one record: ``result_row`` of the pipeline plus the stored object paths."""
        analysis = record.analysis if record.ok and record.analysis is not None else ImageAnalysis(
            record.source, record.status, record.reason, radiograph=record.radiograph
        )
        row = result_row(analysis)
        if not record.ok:
            row.update(status=record.status, reason=record.reason)
            row.update(dict.fromkeys(FINDING_COLUMNS, ""))
        if not row.get("sop_instance_uid"):
            row.update(
                study_instance_uid=record.study_instance_uid,
                series_instance_uid=record.series_instance_uid,
                sop_instance_uid=record.sop_instance_uid,
            )
        row.update({kind: record.files.get(kind, "") for kind in OBJECT_KINDS})
        return row
