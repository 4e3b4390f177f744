"""What travels between the Deploy app's operators: one :class:`CaseRecord` per source DICOM instance.

A record is created by the series selector for every instance it sees and is carried to the end, so that every
input is accounted for in ``results.csv``: a record either keeps going (``status == "ok"``) or stops with a
``reason`` (``status`` ``"skipped"`` for inputs that are not analysable frontal radiographs, ``"failed"`` for
errors while writing its outputs). Operators never drop a record silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CaseRecord", "Prediction"]


@dataclass
class Prediction:
    """Raw network outputs for one radiograph (``Analyzer.infer``).

    Attributes:
        probability: DLNet's pneumonia probability in [0, 1].
        heatmap: ``(h, w)`` float32 at DLNet's input size (values ~[0, 1]).
        lung_probability: ``(h', w')`` float32 in [0, 1] at LSNet's input size.
    """

    probability: float
    heatmap: np.ndarray = field(repr=False)
    lung_probability: np.ndarray = field(repr=False)
    #: DLNet's extent-head read-out maps (``Analyzer.run_dlnet``) when severity or the probability uses them, else None
    read_out: np.ndarray | None = field(default=None, repr=False)
    #: the uncertainty passes of ``Analyzer.infer_spread`` for this image: mirrored ``(p, heatmap, lungs, read_out)`` and
    #: MC-dropout probabilities (empty when ``uncertainty`` is ``off``)
    passes: list = field(default_factory=list, repr=False)
    mc_probabilities: np.ndarray | None = field(default=None, repr=False)
    #: the image QC gate's answer (:class:`pneumonitor.qc.QCResult`; None without a gate)
    qc: Any = None


@dataclass
class CaseRecord:
    """One source instance on its way through the app.

    Attributes:
        source: the DICOM file.
        study_instance_uid, series_instance_uid, sop_instance_uid: identity of the source instance.
        status: ``ok`` while usable, ``skipped`` (not analysable; ``reason`` says why) or ``failed`` (an error while
            building or writing its outputs; ``reason`` says which).
        reason: the user-facing reason for a skip or a failure.
        dataset: the source's pydicom header (no pixel data needed by the writers).
        radiograph: :class:`pneumonitor.reading.Radiograph` once converted.
        prediction: network outputs once inferred.
        analysis: :class:`pneumonitor.inference.analyzer.ImageAnalysis` once severity is assessed.
        objects: written DICOM objects by kind (``seg``, ``sr``, ``sc``), in creation order.
        files: paths of the stored objects relative to the output folder, by kind.
    """

    source: Path
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    status: str = "ok"
    reason: str = ""
    dataset: Any = field(default=None, repr=False)
    radiograph: Any = field(default=None, repr=False)
    prediction: Prediction | None = field(default=None, repr=False)
    analysis: Any = field(default=None, repr=False)
    objects: dict[str, Any] = field(default_factory=dict, repr=False)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def skip(self, reason: str) -> None:
        """Stop this record: not an analysable frontal radiograph."""
        self.status, self.reason = "skipped", reason

    def fail(self, reason: str) -> None:
        """Stop this record: an error while producing its outputs."""
        self.status, self.reason = "failed", reason
        self.objects.clear()
