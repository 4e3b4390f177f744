"""Loading DLNet/LSNet weights from a checkpoint file or a bundle folder.

Accepted forms, in the order they are tried:

1. a bundle folder (``bundles/dlnet``): ``configs/inference.json`` gives ``network_def`` and ``image_size``,
   ``models/model.pt`` the weights;
2. a ``.pt`` file holding ``{"state_dict": ..., "network": {constructor args}, "image_size": [H, W]}``
   (what :func:`save_checkpoint` writes);
3. a ``.pt`` file holding a plain state dict, or MONAI's ``{"model": state_dict}``; the architecture is recovered from
   the tensor shapes and the image size is the paper's 448 unless given.

TorchScript is not loaded here (the Deploy app loads ``model.ts`` itself).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumonitor.networks.dlnet import DLNet
from pneumonitor.networks.lsnet import LSNet

__all__ = ["LoadedNetwork", "load_network", "save_checkpoint", "save_half_precision", "WeightsNotFound", "NETWORK_CLASSES"]

NETWORK_CLASSES: dict[str, type[nn.Module]] = {"DLNet": DLNet, "LSNet": LSNet}
PAPER_IMAGE_SIZE = (448, 448)


class WeightsNotFound(FileNotFoundError):
    """No usable weights at the given location; the message says where they were looked for."""


@dataclass
class LoadedNetwork:
    """A network in eval mode with what the pipeline needs to run it."""

    network: nn.Module
    image_size: tuple[int, int]
    source: Path
    sha256: str
    settings: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(network: nn.Module, path: str | Path, image_size: tuple[int, int] | list[int], **extra: Any) -> Path:
    """Write a self-describing checkpoint (weights, constructor args, input size) atomically."""
    config = dict(getattr(network, "config", {}))
    payload = {"state_dict": network.state_dict(), "network": config, "image_size": list(image_size), **extra}
    return _torch_save_atomic(payload, Path(path))


def _torch_save_atomic(payload: Any, path: Path) -> Path:
    """``torch.save`` to a temporary sibling, then rename: readers never see a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


#: scalar settings a checkpoint file may carry besides its weights (see ``pneumonitor.inference.analyzer.AnalysisSettings``)
OPERATING_POINT_KEYS = ("classification_threshold", "heatmap_threshold")


def save_half_precision(source: str | Path, destination: str | Path) -> Path:
    """Rewrite a checkpoint with its floating-point tensors in fp16 (half the bytes), atomically.

    The file stays the plain state dict MONAI's ``CheckpointLoader`` and :func:`load_network` read (the fp32
    parameters receive the fp16 values on loading). Integer tensors (BatchNorm's ``num_batches_tracked``) are kept.
    Whether the metrics survive is the caller's measurement (the shipped DLNet: see its model card).
    """
    payload = torch.load(Path(source), map_location="cpu", weights_only=True)
    state_dict = _state_dict_of(payload)
    half = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in state_dict.items()}
    return _torch_save_atomic(half, Path(destination))


def _state_dict_of(payload: Any) -> dict[str, torch.Tensor]:
    if isinstance(payload, dict):
        for key in ("state_dict", "model", "network_weights"):
            if key in payload and isinstance(payload[key], dict):
                return payload[key]
        if all(isinstance(v, torch.Tensor) for v in payload.values()):
            return payload
    raise ValueError("the file holds no state dict")


def _from_bundle(folder: Path, kind: str) -> tuple[Path, dict[str, Any] | None, tuple[int, int] | None, dict]:
    config_file = folder / "configs" / "inference.json"
    weights = folder / "models" / "model.pt"
    if not weights.is_file():
        raise WeightsNotFound(f"no trained {kind} weights in {weights}")
    settings: dict[str, Any] = {}
    network_args = image_size = None
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        net_def = config.get("network_def", {})
        if isinstance(net_def, dict):
            network_args = {k: v for k, v in net_def.items() if not k.startswith("_")}
        if "image_size" in config:
            size = config["image_size"]
            image_size = (int(size[0]), int(size[1])) if isinstance(size, list) else (int(size), int(size))
        settings = {k: v for k, v in config.items() if isinstance(v, (int, float, str, list)) and not k.startswith("_")}
    return weights, network_args, image_size, settings


def load_network(
    location: str | Path, kind: str, device: str | torch.device = "cpu", image_size: tuple[int, int] | None = None
) -> LoadedNetwork:
    """Load ``kind`` (``"DLNet"`` or ``"LSNet"``) from a bundle folder or a checkpoint file, in eval mode on ``device``.

    Raises:
        WeightsNotFound: nothing at ``location``.
        ValueError: the file is not a checkpoint of ``kind``.
    """
    if kind not in NETWORK_CLASSES:
        raise ValueError(f"kind must be one of {sorted(NETWORK_CLASSES)}")
    cls = NETWORK_CLASSES[kind]
    location = Path(location)
    settings: dict[str, Any] = {}
    network_args: dict[str, Any] | None = None
    size = None
    if location.is_dir():
        weights, network_args, size, settings = _from_bundle(location, kind)
    elif location.is_file():
        weights = location
    else:
        raise WeightsNotFound(f"{location} does not exist")
    try:
        payload = torch.load(weights, map_location="cpu", weights_only=True)
        state_dict = _state_dict_of(payload)
    except Exception as exc:
        raise ValueError(f"{weights} is not a readable {kind} checkpoint: {exc}") from exc
    if isinstance(payload, dict) and isinstance(payload.get("network"), dict):
        stored = payload["network"]
        if stored.get("name", kind) != kind:
            raise ValueError(f"{weights} holds a {stored.get('name')} checkpoint, not {kind}")
        network_args = {k: v for k, v in stored.items() if k != "name"}
    if isinstance(payload, dict) and "image_size" in payload:
        size = tuple(int(s) for s in payload["image_size"])
    if isinstance(payload, dict):
        # operating points chosen on validation travel with the weights (a bundle's inference.json may also hold them)
        for key in OPERATING_POINT_KEYS:
            if key in payload and key not in settings:
                settings[key] = float(payload[key])
    try:
        inferred = cls.config_from_state_dict(state_dict)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{weights} does not hold {kind} weights ({exc})") from exc
    # the tensor shapes decide the architecture (a bundle's inference.json may describe another configuration);
    # configuration only fills what the shapes cannot tell (e.g. dropout)
    args = {**(network_args or {}), **inferred}
    network = cls(**args)
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match the {kind} architecture {args}: {exc}") from exc
    network.to(device).eval()
    final_size = tuple(image_size or size or PAPER_IMAGE_SIZE)
    return LoadedNetwork(
        network=network, image_size=final_size, source=weights.resolve(), sha256=_sha256(weights), settings=settings
    )
