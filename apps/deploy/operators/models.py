"""Loading the Deploy app's networks: TorchScript ``model.ts`` from the bundles' ``ckpt_export`` (or a ``.pt``
checkpoint / bundle folder through :func:`pneumonitor.networks.load_network`), wrapped as
:class:`pneumonitor.networks.LoadedNetwork` so that the unchanged :class:`pneumonitor.inference.analyzer.Analyzer` runs them.

Models folder layout (what ``monai-deploy package -m MODELS`` copies to ``/opt/holoscan/models`` in a MAP)::

    MODELS/dlnet/model.ts   (+ optional model.json: {"image_size": [H, W]})
    MODELS/lsnet/model.ts

The network input size (``[H, W]`` pixels) is looked up, in order, in: the sidecar ``model.json`` next to
``model.ts``; the ``inference.json`` that ``ckpt_export --config_file configs/inference.json`` embeds in the
TorchScript archive (key ``image_size``); the bundle's ``configs/inference.json`` beside ``models/``. A model without
any of these is refused (guessing the size would silently change every result).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pneumonitor.networks.checkpoint import OPERATING_POINT_KEYS, LoadedNetwork, WeightsNotFound, _sha256, load_network
from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_KINDS",
    "ModelsNotFound",
    "load_torchscript_network",
    "load_model",
    "load_analyzer",
    "export_torchscript",
]

#: sub-folder of the models folder -> network kind understood by ``pneumonitor.networks``
MODEL_KINDS = {"dlnet": "DLNet", "lsnet": "LSNet"}
TORCHSCRIPT_NAME = "model.ts"
SIDECAR_NAME = "model.json"
EMBEDDED_CONFIGS = ("inference.json", "metadata.json")


class ModelsNotFound(WeightsNotFound):
    """A model the app needs is missing or unusable; ``str(exc)`` says which and where it was looked for."""


def _parse_size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def _size_from_metadata(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """``network_data_format.inputs.image.spatial_shape`` of a bundle's metadata.json, when numeric."""
    try:
        shape = metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    except (KeyError, TypeError):
        return None
    return _parse_size(list(shape)) if isinstance(shape, (list, tuple)) else None


def load_torchscript_network(path: str | Path, kind: str, device: str | torch.device = "cpu") -> LoadedNetwork:
    """Load a TorchScript DLNet/LSNet as a :class:`LoadedNetwork` in eval mode on ``device``.

    Args:
        path: the ``model.ts`` file.
        kind: ``"DLNet"`` or ``"LSNet"`` (only used in messages: TorchScript carries no Python class).
    Raises:
        ModelsNotFound: no file, not TorchScript, or no input size found (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelsNotFound(f"no {kind} TorchScript model at {path}")
    extra_files = dict.fromkeys(EMBEDDED_CONFIGS, "")
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except Exception as exc:  # torch raises RuntimeError/ValueError on non-TorchScript files
        raise ModelsNotFound(f"{path} is not a TorchScript {kind} model ({type(exc).__name__}: {exc})") from exc
    size = None
    settings: dict[str, Any] = {}
    sidecar = path.with_name(SIDECAR_NAME)
    bundle_config = path.parent.parent / "configs" / "inference.json"
    candidates: list[tuple[str, str]] = []
    if sidecar.is_file():
        candidates.append((str(sidecar), sidecar.read_text()))
    if extra_files.get("inference.json"):
        candidates.append((f"{path}:inference.json", extra_files["inference.json"]))
    if bundle_config.is_file():
        candidates.append((str(bundle_config), bundle_config.read_text()))
    for where, text in candidates:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelsNotFound(f"{where} is not valid JSON ({exc})") from exc
        size = _parse_size(config.get("image_size"))
        if size is not None:
            settings = {k: v for k, v in config.items() if isinstance(v, (int, float, str)) and not k.startswith("_")}
            logger.debug("%s input size %s from %s", kind, size, where)
            break
    if size is None and extra_files.get("metadata.json"):
        size = _size_from_metadata(json.loads(extra_files["metadata.json"]))
    if size is None:
        raise ModelsNotFound(
            f"the input size of {path} is unknown: put {{\"image_size\": [H, W]}} in {sidecar}, or export it with "
            "ckpt_export --config_file configs/inference.json"
        )
    module.to(device).eval()
    return LoadedNetwork(
        network=module, image_size=size, source=path.resolve(), sha256=_sha256(path), settings=settings
    )


def load_model(folder: str | Path, kind: str, device: str | torch.device = "cpu") -> LoadedNetwork:
    """``folder/model.ts`` when present, else a bundle folder or ``.pt`` checkpoint via ``load_network``."""
    folder = Path(folder)
    if (folder / TORCHSCRIPT_NAME).is_file():
        return load_torchscript_network(folder / TORCHSCRIPT_NAME, kind, device)
    if (folder / "models" / TORCHSCRIPT_NAME).is_file():  # a bundle folder with an exported model
        return load_torchscript_network(folder / "models" / TORCHSCRIPT_NAME, kind, device)
    try:
        return load_network(folder, kind, device=device)
    except WeightsNotFound as exc:
        raise ModelsNotFound(f"no {kind} model in {folder}: expected {folder / TORCHSCRIPT_NAME} ({exc})") from exc
    except ValueError as exc:
        raise ModelsNotFound(str(exc)) from exc


def load_analyzer(
    models_dir: str | Path, device: str = "auto", settings: AnalysisSettings | None = None, qc: str = "on"
) -> Analyzer:
    """The pipeline's :class:`Analyzer` on the app's models (``models_dir/dlnet``, ``models_dir/lsnet``).

    ``device``: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda``.
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
    gate = None
    if qc != "off":
        from pneumonitor.qc import QCGate, QCWeightsNotFound

        try:
            gate = QCGate.from_bundle(models_dir / "qc" if (models_dir / "qc").is_dir() else None, device=torch_device)
        except QCWeightsNotFound as exc:
            raise ModelsNotFound(str(exc)) from exc
    return Analyzer(loaded["dlnet"], loaded["lsnet"], settings=settings, device=torch_device, qc_gate=gate)


def export_torchscript(loaded: LoadedNetwork, folder: str | Path) -> Path:
    """Trace a loaded eager network to ``folder/model.ts``, its input size embedded as ``inference.json``.

    For checkpoints that did not come through the bundles' ``ckpt_export`` (e.g. ``pneumonitor`` ``.pt`` files).
    The example input is ``(1, C, H, W)`` at the network's input size; the file is written atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    network = loaded.network.to("cpu").eval()
    channels = int(getattr(network, "config", {}).get("in_channels", 3 if hasattr(network, "localization_head") else 1))
    example = torch.rand(1, channels, *loaded.image_size)
    with torch.no_grad():
        traced = torch.jit.trace(network, example, strict=False)
    target = folder / TORCHSCRIPT_NAME
    # the input size travels inside the archive, as ckpt_export stores configs/inference.json: a second file in
    # the model folder would make the SDK's model factory refuse the folder as a named model
    config = {"image_size": list(loaded.image_size), "network_def": dict(getattr(network, "config", {})),
              # the weights' operating point (chosen on validation) travels with them
              **{k: loaded.settings[k] for k in OPERATING_POINT_KEYS if k in loaded.settings}}
    tmp = target.with_name(f".{target.name}.tmp")
    torch.jit.save(traced, str(tmp), _extra_files={"inference.json": json.dumps(config)})
    tmp.replace(target)
    return target
