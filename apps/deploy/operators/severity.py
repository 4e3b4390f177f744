"""Severity of each radiograph: ``Analyzer.postprocess`` (network outputs back to the image size, lung mask) and
:func:`pneumonitor.severity.assess_severity` (pneumonia ratio per lung, 0-8 score). No logic of its own."""

from __future__ import annotations

import logging
from typing import Any

from monai.deploy.core import Fragment

from operators.case_operator import CaseOperator
from operators.records import CaseRecord
from pneumonitor.inference.analyzer import Analyzer

logger = logging.getLogger(__name__)

__all__ = ["SeverityOperator"]


class SeverityOperator(CaseOperator):
    """Attach a :class:`pneumonitor.inference.analyzer.ImageAnalysis` (with ``severity``) to every ``ok`` record.

    Args:
        analyzer: the pipeline whose thresholds are used (the same object the inference operator runs).

    Named inputs:
        cases: ``list[CaseRecord]`` with predictions.
    Named outputs:
        cases: the same records; images where severity cannot be assessed (e.g. no left or right lung found)
            are skipped with the reason.
    """

    def __init__(self, fragment: Fragment, *args: Any, analyzer: Analyzer, **kwargs: Any) -> None:
        self.analyzer = analyzer
        super().__init__(fragment, *args, **kwargs)

    def process(self, records: list[CaseRecord]) -> list[CaseRecord]:
        return [self.assess(record) for record in records]

    def assess(self, record: CaseRecord) -> CaseRecord:
        """Severity for one ``ok`` record with a prediction; a failed assessment skips it. Returns the record."""
        if not record.ok:
            return record
        p = record.prediction
        record.analysis = self.analyzer.postprocess(
            record.radiograph, p.probability, p.heatmap, p.lung_probability,
            passes=p.passes, mc_probabilities=p.mc_probabilities, read_out=p.read_out,
        )
        record.analysis.qc = p.qc  # results.csv's qc column, as in pneumonitor analyze
        if record.analysis.status != "ok":
            record.skip(record.analysis.reason)
            logger.warning("skipped %s: %s", record.source, record.reason)
        return record
