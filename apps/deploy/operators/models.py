"""Loading the Deploy app's networks, wrapped as :class:`pneumonitor.networks.LoadedNetwork` so that the unchanged
:class:`pneumonitor.inference.analyzer.Analyzer` runs them.

Models folder layout (what ``monai-deploy package -m MODELS`` copies to ``/opt/holoscan/models`` in a MAP)::

    MODELS/dlnet/model.ts   the TorchScript of ``python -m monai.bundle ckpt_export ... --config_file
    MODELS/lsnet/model.ts   configs/inference.json`` (scripts/package_map.sh runs it on bundles/dlnet, bundles/lsnet)

The input size and operating point are those of the ``inference.json`` that ``ckpt_export`` stores inside the file
(:func:`pneumonitor.networks.bundle.load_exported`); an export without one is refused (guessing the size would
silently change every result). ``MODELS/dlnet`` may also be a bundle folder (``-m bundles`` serves the shipped
weights), loaded by :func:`pneumonitor.networks.load_bundle`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, resolve_device
from pneumonitor.networks.bundle import LoadedNetwork, WeightsNotFound, load_bundle, load_exported

logger = logging.getLogger(__name__)

__all__ = ["MODEL_KINDS", "ModelsNotFound", "load_model", "load_analyzer"]

#: sub-folder of the models folder -> network kind understood by ``pneumonitor.networks``
MODEL_KINDS = {"dlnet": "DLNet", "lsnet": "LSNet"}
TORCHSCRIPT_NAME = "model.ts"


class ModelsNotFound(WeightsNotFound):
    """A model the app needs is missing or unusable; ``str(exc)`` says which and where it was looked for."""


def load_model(folder: str | Path, kind: str, device: str | torch.device = "cpu") -> LoadedNetwork:
    """``folder/model.ts`` (a ``ckpt_export`` of the bundle) when present, else ``folder`` as a bundle folder.

    Raises:
        ModelsNotFound: neither, or an unusable one (the message says why).
    """
    folder = Path(folder)
    try:
        if (folder / TORCHSCRIPT_NAME).is_file():
            return load_exported(folder / TORCHSCRIPT_NAME, device)
        return load_bundle(folder, device, kind=kind)
    except WeightsNotFound as exc:
        raise ModelsNotFound(
            f"no {kind} model in {folder}: expected {folder / TORCHSCRIPT_NAME} (ckpt_export of the bundle) or a "
            f"bundle folder ({exc})"
        ) from exc
    except ValueError as exc:
        raise ModelsNotFound(f"{kind}: {exc}") from exc


def load_analyzer(
    models_dir: str | Path, device: str = "auto", settings: AnalysisSettings | None = None, qc: str = "on",
    operating_point: str | None = None,
) -> Analyzer:
    """The pipeline's :class:`Analyzer` on the app's models (``models_dir/dlnet``, ``models_dir/lsnet``).

    ``device``: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda``.
    ``operating_point``: a named classification operating point of the DLNet model (its ``operating_points``).
    ``qc``: the image QC gate (``on``/``warn``/``off``, :mod:`pneumonitor.qc`), loaded from ``models_dir/qc``
    (a ``bundles/qc`` copy) when there is one, else from the shipped ``bundles/qc``.

    Raises:
        ModelsNotFound: a model is missing or unusable; the message lists what was looked for.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelsNotFound(
            f"models folder {models_dir} does not exist; it must hold dlnet/model.ts and lsnet/model.ts "
            "(exported from the bundles with ckpt_export) or dlnet/ and lsnet/ bundle folders: -m bundles uses the shipped "
            "weights"
        )
    torch_device = resolve_device(device)
    loaded = {sub: load_model(models_dir / sub, kind, torch_device) for sub, kind in MODEL_KINDS.items()}
    settings = replace(settings or AnalysisSettings(), qc=qc)
    if operating_point is not None:
        settings = replace(settings, operating_point=operating_point)
    gate = None
    if qc != "off":
        from pneumonitor.qc import QCGate, QCWeightsNotFound

        try:
            gate = QCGate.from_bundle(models_dir / "qc" if (models_dir / "qc").is_dir() else None, device=torch_device)
        except QCWeightsNotFound as exc:
            raise ModelsNotFound(str(exc)) from exc
    try:
        return Analyzer(loaded["dlnet"], loaded["lsnet"], settings=settings, device=torch_device, qc_gate=gate)
    except ValueError as exc:  # settings the models cannot serve (an unknown operating point): a refusal, not a trace
        raise ModelsNotFound(str(exc)) from exc
