"""pneumonitor MONAI Deploy application: chest-radiograph DICOM in; DICOM SEG + SR + overlay Secondary Capture out.

    .venv-deploy/bin/python apps/deploy -i DICOM_DIR -o OUT_DIR [-m MODELS_DIR]      (bash apps/deploy/setup_env.sh)

``MODELS_DIR`` holds ``dlnet/model.ts`` and ``lsnet/model.ts`` (default: ``$HOLOSCAN_MODEL_PATH`` or ``./models``;
in a MAP, ``/opt/holoscan/models``). ``PNEUMONITOR_DEVICE`` = ``auto`` (default: GPU when present), ``cpu`` or
``cuda``; ``PNEUMONITOR_OPERATING_POINT`` = a named operating point of the DLNet bundle (``high-specificity``;
default: the bundle's ``classification_threshold``). Outputs and their layout: :mod:`operators.store`. NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from operators.inference import PneumoniaInferenceOperator
from operators.models import load_analyzer
from operators.radiograph import RadiographConverterOperator
from operators.sc_writer import DICOMOverlayWriterOperator
from operators.seg_writer import DICOMSegWriterOperator
from operators.selection import CXRDataLoaderOperator, CXRSeriesSelectorOperator
from operators.severity import SeverityOperator
from operators.sr_writer import DICOMSRWriterOperator
from operators.store import DICOMStoreOperator

logger = logging.getLogger("pneumonitor.deploy")

CASES = {("cases", "cases")}


class PneumonitorApp(Application):
    """Loader -> frontal CR/DX selection -> 2-D radiograph -> DLNet+LSNet -> severity -> SEG -> SR -> SC -> store."""

    name = "pneumonitor"
    description = "Pneumonia detection, lung segmentation and per-lung severity on chest radiographs (DICOM)."
    version = "0.1.0"

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every copied module at INFO
        # pydicom's decoders log a traceback for each frame they cannot decode; the skip reason names the error
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        # PNEUMONITOR_QC=on|warn|off: the image QC gate of pneumonitor analyze (default on);
        # PNEUMONITOR_OPERATING_POINT: a named operating point of the DLNet bundle (default: its classification_threshold)
        self.analyzer = load_analyzer(context.model_path, device=os.environ.get("PNEUMONITOR_DEVICE", "auto"),
                                      qc=os.environ.get("PNEUMONITOR_QC", "on"),
                                      operating_point=os.environ.get("PNEUMONITOR_OPERATING_POINT") or None)
        logger.info("input %s, output %s, models %s on %s", input_folder, output_folder, context.model_path,
                    self.analyzer.device)

        loader = CXRDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="dicom_loader")
        selector = CXRSeriesSelectorOperator(self, name="cxr_selector")
        converter = RadiographConverterOperator(self, name="radiograph_converter")
        inference = PneumoniaInferenceOperator(self, analyzer=self.analyzer, name="dlnet_lsnet_inference")
        severity = SeverityOperator(self, analyzer=self.analyzer, name="severity")
        seg = DICOMSegWriterOperator(self, name="seg_writer")
        sr = DICOMSRWriterOperator(self, name="sr_writer")
        sc = DICOMOverlayWriterOperator(self, name="overlay_writer")
        self.store = DICOMStoreOperator(
            self, output_folder=output_folder, settings=self.analyzer.describe(), name="dicom_store"
        )

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list"), ("unreadable", "unreadable")})
        for upstream, downstream in ((selector, converter), (converter, inference), (inference, severity),
                                     (severity, seg), (seg, sr), (sr, sc), (sc, self.store)):
            self.add_flow(upstream, downstream, CASES)
