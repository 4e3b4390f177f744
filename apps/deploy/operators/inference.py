"""DLNet + LSNet inference on the selected radiographs, through :class:`pneumonitor.inference.analyzer.Analyzer`.

Both networks run in one operator because ``Analyzer.infer`` runs them on one batch (and keeps the CLI's exact
numerics: preprocessing, mixed precision on CUDA, sigmoid/heatmap post-processing). The models are the bundles'
TorchScript exports (``MODELS/dlnet/model.ts``, ``MODELS/lsnet/model.ts``, see :mod:`operators.models`), on the GPU
when torch sees one, else on the CPU.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.deploy.core import Fragment

from operators.case_operator import CaseOperator
from operators.records import CaseRecord, Prediction
from pneumonitor.inference.analyzer import Analyzer

logger = logging.getLogger(__name__)

__all__ = ["PneumoniaInferenceOperator"]


class PneumoniaInferenceOperator(CaseOperator):
    """Pneumonia probability, heatmap (DLNet) and lung probability (LSNet) for every ``ok`` record.

    Args:
        analyzer: the pipeline with both networks loaded (:func:`operators.models.load_analyzer`).
        batch_size: radiographs per forward pass.

    Named inputs:
        cases: ``list[CaseRecord]`` with radiographs.
    Named outputs:
        cases: the same records; ``ok`` ones carry a :class:`~operators.records.Prediction`.
    """

    def __init__(self, fragment: Fragment, *args: Any, analyzer: Analyzer, batch_size: int = 4, **kwargs: Any) -> None:
        self.analyzer = analyzer
        self.batch_size = max(1, int(batch_size))
        super().__init__(fragment, *args, **kwargs)

    def process(self, records: list[CaseRecord]) -> list[CaseRecord]:
        return self.predict(records)

    def predict(self, records: list[CaseRecord]) -> list[CaseRecord]:
        """Run both networks on the ``ok`` records in batches of ``batch_size``; returns the records."""
        todo = [r for r in records if r.ok]
        # the image QC gate of pneumonitor analyze (laterals, inverted/rotated images, non-radiographs)
        checks = {id(r): qc for r, qc in zip(todo, self.analyzer.quality_check([r.radiograph for r in todo]))}
        for record in todo:
            qc = checks[id(record)]
            reason = self.analyzer.qc_refusal(qc)
            if reason is not None:
                record.skip(reason)
                logger.warning("skipped %s: %s", record.source, reason)
            elif qc is not None and not qc.passed:  # PNEUMONITOR_QC=warn: analysed, the finding goes to the log
                logger.warning("image QC finding for %s (analysed anyway): %s", record.source, qc.describe())
        todo = [r for r in todo if r.ok]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            inputs = [self.analyzer.preprocess(r.radiograph) for r in batch]
            dl_batch, ls_batch = torch.stack([dl for dl, _ in inputs]), torch.stack([ls for _, ls in inputs])
            probabilities, heatmaps, lungs, read_outs = self.analyzer.infer(dl_batch, ls_batch)
            passes, mc = self.analyzer.infer_spread(dl_batch, ls_batch)  # the uncertainty of analyze
            for j, (record, probability, heatmap, lung) in enumerate(zip(batch, probabilities, heatmaps, lungs)):
                record.prediction = Prediction(
                    float(probability), heatmap, lung, read_out=None if read_outs is None else read_outs[j],
                    passes=[(float(p[j]), h[j], lp[j], None if r is None else r[j]) for p, h, lp, r in passes],
                    mc_probabilities=mc[:, j],
                    qc=checks[id(record)],
                )
        logger.info("inferred %d radiograph(s) on %s", len(todo), self.analyzer.device)
        return records
