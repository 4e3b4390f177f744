"""Base of the SEG, SR and Secondary Capture writers.

A writer builds its DICOM object for every ``ok`` record (pure :meth:`DICOMWriterOperator.build`) and attaches it to
the record; :class:`operators.store.DICOMStoreOperator` then writes all objects of a study at once. Building first
and writing last is what guarantees that a study whose SEG, SR or overlay cannot be made gets no output at all
(instead of, say, an SR without its SEG): a failed build marks the record ``failed`` with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from monai.deploy.core import Fragment
from pydicom.dataset import Dataset

from operators.case_operator import CaseOperator
from operators.records import CaseRecord

logger = logging.getLogger(__name__)

__all__ = ["DICOMWriterOperator"]


class DICOMWriterOperator(CaseOperator):
    """Build one DICOM object per ``ok`` record (subclasses set ``kind`` and implement :meth:`build`).

    Named inputs:
        cases: ``list[CaseRecord]`` with severity.
    Named outputs:
        cases: the same records, ``objects[kind]`` added; a record whose object cannot be built is ``failed``.
    """

    kind = ""

    def __init__(self, fragment: Fragment, *args: Any, **kwargs: Any) -> None:
        super().__init__(fragment, *args, **kwargs)

    def process(self, records: list[CaseRecord]) -> list[CaseRecord]:
        return self.apply(records)

    def apply(self, records: list[CaseRecord]) -> list[CaseRecord]:
        """:meth:`build` for each ``ok`` record; an exception fails that record (logged with its reason)."""
        for record in records:
            if not record.ok:
                continue
            try:
                record.objects[self.kind] = self.build(record)
            except Exception as exc:  # noqa: BLE001 - the study fails, the app goes on with the others
                logger.debug("building %s for %s failed", self.kind, record.source, exc_info=True)
                record.fail(f"the {self.kind.upper()} object could not be built ({type(exc).__name__}: {exc})")
                logger.error("failed %s: %s", record.source, record.reason)
        return records

    def build(self, record: CaseRecord) -> Dataset:
        raise NotImplementedError
