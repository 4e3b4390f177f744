"""The bundle is the model: loading a network from a MONAI bundle folder, and writing one.

A bundle folder (``bundles/dlnet``, ``bundles/lsnet``, ``bundles/qc``, or a copy) holds:

- ``configs/inference.json``: the architecture (``network_def``, built with MONAI's ``ConfigParser``), the input size
  (``image_size``: ``[H, W]`` or one number) and the operating point (``classification_threshold``,
  ``heatmap_threshold``, or a gate's own thresholds) — the only place these are read from;
- ``models/model.pt``: the weights, a plain state dict (what MONAI's ``CheckpointSaver``/``CheckpointLoader`` use;
  fp16 tensors are fine, they are copied into the network's fp32 parameters).

The Deploy app runs the TorchScript that ``python -m monai.bundle ckpt_export --config_file configs/inference.json``
writes: :func:`load_exported` reads it with the ``inference.json`` that ``ckpt_export`` embeds in it, so the same
file decides its input size and operating point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pneumonitor.publishing import atomic_path, write_json

__all__ = [
    "INFERENCE_CONFIG",
    "WEIGHTS",
    "LoadedNetwork",
    "WeightsNotFound",
    "build_network",
    "combine_dlnet_bundles",
    "split_dlnet_ensemble",
    "single_dlnet",
    "starting_state",
    "starting_weights",
    "load_initial_weights",
    "SERVED_WEIGHTS_KEYS",
    "image_size_of",
    "weights_sha256",
    "load_bundle",
    "load_exported",
    "read_inference_config",
    "save_bundle",
    "save_half_precision",
    "serve_trained_weights",
    "torch_save_atomic",
    "update_inference_config",
]

INFERENCE_CONFIG = Path("configs") / "inference.json"
WEIGHTS = Path("models") / "model.pt"

logger = logging.getLogger(__name__)


class WeightsNotFound(FileNotFoundError):
    """No usable bundle at the given location; the message says what was looked for."""


@dataclass
class LoadedNetwork:
    """A network in eval mode with what the pipeline needs to run it.

    ``settings``: the scalar and list values of the bundle's ``inference.json`` (its operating point among them).
    """

    network: nn.Module
    image_size: tuple[int, int]
    source: Path
    sha256: str
    settings: dict[str, Any]


def weights_sha256(path: Path) -> str:
    """The sha256 of a weights file (what results.json and an ensemble record; the Label app's working copies too)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_inference_config(bundle: str | Path) -> dict[str, Any]:
    """``bundle/configs/inference.json`` as a dict.

    Raises:
        WeightsNotFound: no such file.
        ValueError: not JSON.
    """
    path = Path(bundle) / INFERENCE_CONFIG
    if not path.is_file():
        raise WeightsNotFound(f"{bundle} is not a bundle folder: no {INFERENCE_CONFIG}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc


def image_size_of(config: dict[str, Any], where: str | Path = "inference.json") -> tuple[int, int]:
    """``image_size`` of an inference config as ``(H, W)`` (one number means a square)."""
    size = config.get("image_size")
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"{where} has no usable image_size ([H, W] or one number), got {size!r}")


def _settings_of(config: dict[str, Any]) -> dict[str, Any]:
    # expressions ("$...") and references are the bundle's workflow, not settings; ``operating_points`` is the one
    # table of settings (name -> classification threshold)
    settings = {
        k: v for k, v in config.items()
        if isinstance(v, (int, float, str, list)) and not k.startswith("_") and not (isinstance(v, str) and v[:1] in "$@")
    }
    points = config.get("operating_points")
    if isinstance(points, dict) and all(isinstance(v, (int, float)) for v in points.values()):
        settings["operating_points"] = {str(k): float(v) for k, v in points.items()}
    return settings


def build_network(network_def: dict[str, Any]) -> nn.Module:
    """The network a ``network_def`` describes, built by MONAI's ``ConfigParser``."""
    from monai.bundle import ConfigParser

    # only network_def: parsing the whole inference.json would import its workflow (engines, ignite) for nothing
    return ConfigParser({"network_def": network_def}).get_parsed_content("network_def")


def load_bundle(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> LoadedNetwork:
    """The network of the bundle folder ``path``, weights loaded, in eval mode on ``device``.

    ``kind``: the network class name the caller needs (``"DLNet"``, ``"LSNet"``); another one is refused.

    Raises:
        WeightsNotFound: ``path`` is not a bundle folder or has no trained weights (the message says which).
        ValueError: the config is unusable, the network is not ``kind``, or the weights do not fit ``network_def``.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a bundle folder"
        raise WeightsNotFound(f"{folder} {what} (a bundle folder holds {INFERENCE_CONFIG} and {WEIGHTS})")
    config = read_inference_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise WeightsNotFound(f"no trained weights in {weights}")
    if not isinstance(config.get("network_def"), dict):
        raise ValueError(f"{folder / INFERENCE_CONFIG} has no network_def")
    size = image_size_of(config, folder / INFERENCE_CONFIG)
    network = build_network(config["network_def"])
    # an ensemble of DLNets answers as a DLNet (its class says so: pneumonitor.networks.ensemble)
    if kind is not None and getattr(network, "kind", type(network).__name__) != kind:
        raise ValueError(f"{folder} holds a {type(network).__name__}, not {kind}")
    try:
        state_dict = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state_dict)
    except Exception as exc:  # torch raises RuntimeError (shapes, keys) or pickling errors on other files
        raise ValueError(
            f"{weights} does not fit the network_def of {folder / INFERENCE_CONFIG} ({type(exc).__name__}: {exc}); "
            "the training run's network_def and image_size belong in that file (serve_trained_weights writes them)"
        ) from exc
    network.to(device).eval()
    return LoadedNetwork(network, size, weights.resolve(), weights_sha256(weights), _settings_of(config))


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> LoadedNetwork:
    """A TorchScript file written by ``monai.bundle ckpt_export --config_file configs/inference.json``, with the
    input size and operating point of the ``inference.json`` it embeds.

    Raises:
        WeightsNotFound: no such file.
        ValueError: not TorchScript, or exported without ``--config_file configs/inference.json``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"no TorchScript model at {path}")
    extra_files = {INFERENCE_CONFIG.name: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except Exception as exc:  # torch raises RuntimeError/ValueError on other files
        raise ValueError(f"{path} is not TorchScript ({type(exc).__name__}: {exc})") from exc
    if not extra_files[INFERENCE_CONFIG.name]:
        raise ValueError(
            f"{path} carries no inference.json: export it with python -m monai.bundle ckpt_export ... "
            "--config_file configs/inference.json (docs/bundles.md)"
        )
    config = json.loads(extra_files[INFERENCE_CONFIG.name])
    size = image_size_of(config, f"{path}:inference.json")
    module.to(device).eval()
    return LoadedNetwork(module, size, path.resolve(), weights_sha256(path), _settings_of(config))


def torch_save_atomic(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary sibling, then rename (:func:`pneumonitor.publishing.atomic_path`): readers never
    see a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def update_inference_config(bundle: str | Path, remove: Sequence[str] = (), **values: Any) -> Path:
    """Set ``values`` in ``bundle/configs/inference.json`` and drop the keys ``remove`` (atomically; other keys and
    their order kept)."""
    config = read_inference_config(bundle)
    config.update(values)
    for key in remove:
        config.pop(key, None)
    write_json(Path(bundle) / INFERENCE_CONFIG, config, indent=4)
    return Path(bundle) / INFERENCE_CONFIG


def _network_def(network: nn.Module) -> dict[str, Any]:
    """``network_def`` of a DLNet/LSNet (their ``config`` holds every constructor argument)."""
    config = dict(getattr(network, "config", {}))
    name = config.pop("name", type(network).__name__)
    return {"_target_": f"pneumonitor.networks.{name}", **config}


def save_bundle(
    network: nn.Module, folder: str | Path, image_size: int | tuple[int, int] | list[int], **settings: Any
) -> Path:
    """Write ``network`` as a bundle folder :func:`load_bundle` reads: ``configs/inference.json`` with its
    ``network_def``, ``image_size`` and ``settings`` (e.g. an operating point), and ``models/model.pt``. Returns
    ``folder``. For networks built in code (tests, benchmarks); trained bundles use :func:`serve_trained_weights`.
    """
    folder = Path(folder)
    size = image_size if isinstance(image_size, int) else list(image_size)
    config = {"network_def": _network_def(network), "image_size": size, **settings}
    torch_save_atomic(network.state_dict(), folder / WEIGHTS)
    write_json(folder / INFERENCE_CONFIG, config, indent=4)
    return folder


def save_half_precision(source: str | Path, destination: str | Path) -> Path:
    """Rewrite a state dict with its floating-point tensors in fp16 (half the bytes), atomically.

    Integer tensors (BatchNorm's ``num_batches_tracked``) are kept. Whether the metrics survive is the caller's
    measurement (the shipped DLNet: see its model card).
    """
    state_dict = torch.load(Path(source), map_location="cpu", weights_only=True)
    half = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in state_dict.items()}
    return torch_save_atomic(half, destination)


#: the ``inference.json`` keys :func:`serve_trained_weights` writes or drops: they describe the served weights, so
#: whatever refreshes a bundle's configs around weights it keeps (the MONAI Label app's working copies) keeps these
SERVED_WEIGHTS_KEYS = ("network_def", "image_size", "severity_rule", "probability_source", "ensemble_members",
                       "operating_points")


def serve_trained_weights(
    weights: str | Path,
    config_files: list[str | Path],
    served_bundle: str | Path,
    half_precision: bool = False,
) -> Path:
    """Serve a training run's weights: ``weights`` (the run's ``models/model.pt``) to
    ``served_bundle/models/model.pt`` (in fp16 with ``half_precision``), and the run's ``network_def`` and
    ``image_size`` (``config_files`` merged as ``monai.bundle run --config_file "[...]"`` merges them) into
    ``served_bundle/configs/inference.json``: the served config always describes the served weights. The rest of
    ``inference.json`` (operating point, workflow) is kept, except ``severity_rule`` and ``probability_source``, which go
    back to the paper's ``heatmap-threshold`` / ``classification-head`` (an extent head fits only the weights it was
    fitted on), and the named ``operating_points`` and ``ensemble_members``, which are dropped (choose the points
    again: ``pneumonitor evaluate --split validation --save-operating-point``). Returns the served ``inference.json``.

    Raises:
        WeightsNotFound: ``served_bundle`` has no ``configs/inference.json`` (copy the bundle's configs first).
        ValueError: the merged config has no ``network_def``/``image_size``, or the weights do not fit it.
    """
    trained = _merged_training_config(config_files)
    image_size_of(trained, config_files[-1])
    served_bundle = Path(served_bundle)
    served = read_inference_config(served_bundle)  # a bundle folder, before anything is replaced
    state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        build_network(trained["network_def"]).load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not fit the network_def of {config_files}: {exc}") from exc
    if half_precision:
        save_half_precision(weights, served_bundle / WEIGHTS)
    else:
        with atomic_path(served_bundle / WEIGHTS) as tmp:
            shutil.copyfile(weights, tmp)  # the file as trained, byte for byte
    # an extent head fitted to the old weights' features does not fit the new ones: back to the paper's rule until
    # `pneumonitor fit-extent-head` fits it again
    refit = {k: v for k, v in (("severity_rule", "heatmap-threshold"), ("probability_source", "classification-head"))
             if k in served}  # these, network_def, image_size and the two dropped below: SERVED_WEIGHTS_KEYS
    # served into an ensemble's bundle (a Label promotion): the one trained network replaces the ensemble; named
    # operating points were chosen for the old weights (the default threshold stays: the promotion was judged at it)
    return update_inference_config(served_bundle, remove=("ensemble_members", "operating_points"),
                                   network_def=trained["network_def"],
                                   image_size=trained["image_size"], **refit)


def _merged_training_config(config_files: Sequence[str | Path]) -> dict[str, Any]:
    """``config_files`` merged as ``monai.bundle run --config_file "[...]"`` merges them (raw, not instantiated)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    merged = parser.get()
    if not isinstance(merged.get("network_def"), dict):
        raise ValueError(f"{config_files} give no network_def")
    return merged


def starting_state(bundle: str | Path, network: nn.Module) -> dict[str, torch.Tensor]:
    """The weights served in ``bundle`` as a starting point for training ``network``: ``models/model.pt`` itself when
    its parameters have ``network``'s names and shapes; for a DLNet ensemble, the member's that do (the CPU recipe,
    ResNet-18, continues from the shipped ensemble's member (a), the paper's configuration from member (b)).

    Raises:
        WeightsNotFound: ``bundle`` has no weights.
        ValueError: neither the weights nor any member fit ``network`` (the message names the members).
    """
    return _starting_state(bundle, network)[0]


def _starting_state(bundle: str | Path, network: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`starting_state` and whether it is the bundle's ``model.pt`` as a whole (not one member's part)."""
    bundle = Path(bundle)
    if not (bundle / WEIGHTS).is_file():
        raise WeightsNotFound(f"no trained weights in {bundle / WEIGHTS}")
    shapes = _shapes(network.state_dict())
    state = torch.load(bundle / WEIGHTS, map_location="cpu", weights_only=True)
    if _shapes(state) == shapes:
        return state, True
    members = read_inference_config(bundle).get("network_def", {}).get("members") or []
    for index in range(len(members)):
        member = _member_state(state, index)
        if _shapes(member) == shapes:
            return member, False
    described = ", ".join(f"{i}: {m.get('backbone', '?')}" for i, m in enumerate(members)) or "a single network"
    raise ValueError(f"the weights served in {bundle} ({described}) do not fit the training network: train the "
                     "architecture of one of them (e.g. add train_cpu.json for the ResNet-18 member) or without them")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _member_state(state: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Member ``index``'s weights in an ensemble's state dict (stored under ``members.<index>.``, as
    :func:`combine_dlnet_bundles` writes them)."""
    prefix = f"members.{int(index)}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def starting_weights(bundle: str | Path, config_files: list[str | Path], out: str | Path) -> Path:
    """:func:`starting_state` for the network of a training run with ``config_files`` (merged as ``monai.bundle
    run`` merges them), as a file to load (a MONAI Label fine-tune's CheckpointLoader): ``bundle/models/model.pt``
    itself when it fits, else the fitting member written to ``out``.

    Raises:
        WeightsNotFound, ValueError: as :func:`starting_state`.
    """
    state, whole = _starting_state(bundle, build_network(_merged_training_config(config_files)["network_def"]))
    if whole:
        return Path(bundle) / WEIGHTS
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return torch_save_atomic(state, Path(out))


def load_initial_weights(network: nn.Module, source: str | Path | None) -> nn.Module:
    """``network`` with the weights ``source`` names loaded strictly, for a training run to start from (``train.json``
    ``init_weights``): a bundle folder (:func:`starting_state`: its own weights or the member of ``network``'s
    architecture), or a state-dict file; ``""``/``None``: ``network`` as initialised. A ``resume.pt`` of the run
    still wins (:class:`pneumonitor.engines.ResumeCheckpoint` restores it when the run starts).

    Raises:
        WeightsNotFound: no such bundle or file. ValueError: the weights do not fit ``network``.
    """
    if not source:
        return network
    source = Path(source)
    if source.is_dir():
        state = starting_state(source, network)
    elif source.is_file():
        state = torch.load(source, map_location="cpu", weights_only=True)
    else:
        raise WeightsNotFound(f"init_weights {source} is neither a bundle folder nor a weights file")
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"init_weights {source} do not fit the training network ({exc})") from exc
    logger.info("training starts from %s", source)
    return network


def combine_dlnet_bundles(
    members: list[str | Path],
    out: str | Path,
    localization_member: int = 0,
    member_weights: list[float] | None = None,
) -> Path:
    """Write the DLNet bundles ``members`` as one :class:`pneumonitor.networks.ensemble.DLNetEnsemble` bundle into
    ``out`` (a copy of the localization member's folder: its docs, train configs and settings). ``inference.json``
    gets the ensemble's ``network_def`` (the members' own definitions nested), the largest member's ``image_size``
    and ``ensemble_members`` (each member's folder, weights sha256, image size); ``models/model.pt`` holds the
    members' weights under ``members.<i>.`` as each member stored them. The severity rule and probability source stay
    the localization member's; the classification threshold is its too (its named ``operating_points`` are dropped)
    until the ensemble's own are chosen on validation (``pneumonitor evaluate --split validation --save-operating-point OUT``). Returns the inference.json.

    Raises:
        WeightsNotFound: a member is not a bundle with weights.
        ValueError: a member is not a single DLNet, or the combined weights do not load.
    """
    folders = [Path(m) for m in members]
    if len(folders) < 2:
        raise ValueError(f"an ensemble needs at least two DLNet bundles, got {len(folders)}")
    if not 0 <= int(localization_member) < len(folders):
        raise ValueError(f"localization member {localization_member} is not one of the {len(folders)} bundles")
    configs, states = [], []
    for folder in folders:
        config = read_inference_config(folder)
        target = str(config.get("network_def", {}).get("_target_", ""))
        if not target.endswith(".DLNet"):
            raise ValueError(f"{folder} holds {target or 'no network_def'}, not a single DLNet")
        if not (folder / WEIGHTS).is_file():
            raise WeightsNotFound(f"no trained weights in {folder / WEIGHTS}")
        configs.append(config)
        states.append(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    sizes = [list(image_size_of(c, f / INFERENCE_CONFIG)) for c, f in zip(configs, folders)]
    network_def = {
        "_target_": "pneumonitor.networks.DLNetEnsemble",
        "members": [c["network_def"] for c in configs],
        "input_sizes": sizes,
        "member_weights": member_weights or [1.0] * len(folders),
        "localization_member": int(localization_member),
    }
    state = {f"members.{i}.{k}": v for i, member in enumerate(states) for k, v in member.items()}
    try:
        build_network(network_def).load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"the members' weights do not load into the ensemble ({exc})") from exc
    out = Path(out)
    base = folders[int(localization_member)]
    if out.resolve() != base.resolve():
        shutil.copytree(base, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval"))
    torch_save_atomic(state, out / WEIGHTS)
    largest = max(sizes, key=lambda s: s[0] * s[1])
    # the member's named operating points say what its own threshold does on validation: not the ensemble's
    return update_inference_config(
        out, remove=("operating_points",), network_def=network_def, image_size=largest,
        ensemble_members=[{"bundle": f.resolve().name, "version": _bundle_version(f), "sha256": weights_sha256(f / WEIGHTS),
                           "image_size": s} for f, s in zip(folders, sizes)])


def split_dlnet_ensemble(bundle: str | Path, member: int, out: str | Path) -> Path:
    """Write member ``member`` of the DLNet ensemble ``bundle`` as a bundle of its own into ``out`` (the inverse of
    :func:`combine_dlnet_bundles`; a copy of the ensemble's folder: its docs and train configs): its ``network_def``,
    its input size and its weights as stored. What was chosen for the ensemble is dropped (classification and heatmap
    thresholds, named operating points, the members' record): choose them again on validation; the severity rule and
    the extent-head fit record stay only with the localization member (whose extent head the ensemble used); the
    others get the paper's rule until their head is fitted.
    Refitting that extent head, or continuing a member's training (``init_weights``), starts here. Returns the
    member's inference.json.

    Raises:
        WeightsNotFound: ``bundle`` has no weights.
        ValueError: ``bundle`` is not a DLNet ensemble, or it has no member ``member``.
    """
    bundle, out = Path(bundle), Path(out)
    config = read_inference_config(bundle)
    network_def = config.get("network_def", {})
    if not str(network_def.get("_target_", "")).endswith("DLNetEnsemble"):
        raise ValueError(f"{bundle} holds {network_def.get('_target_') or 'no network_def'}, not a DLNet ensemble")
    members = network_def.get("members") or []
    if not 0 <= int(member) < len(members):
        raise ValueError(f"{bundle} has {len(members)} members: no member {member}")
    if not (bundle / WEIGHTS).is_file():
        raise WeightsNotFound(f"no trained weights in {bundle / WEIGHTS}")
    state = _member_state(torch.load(bundle / WEIGHTS, map_location="cpu", weights_only=True), member)
    if out.resolve() != bundle.resolve():
        shutil.copytree(bundle, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval"))
    torch_save_atomic(state, out / WEIGHTS)
    dropped = ["ensemble_members", "operating_points", "classification_threshold", "heatmap_threshold",
               "operating_point_basis"]
    settings: dict[str, Any] = {}
    if int(member) != int(network_def.get("localization_member", 0)):
        # whether its own extent head was ever fitted is not recorded in the ensemble: the paper's rule until
        # `pneumonitor fit-extent-head` fits it
        dropped.append("extent_head_fit")
        settings["severity_rule"] = "heatmap-threshold"
    return update_inference_config(out, remove=dropped, network_def=members[int(member)],
                                   image_size=list(network_def["input_sizes"][int(member)]), **settings)


def _bundle_version(folder: Path) -> str:
    """``version`` of a bundle's ``configs/metadata.json`` ("" without one)."""
    try:
        return str(json.loads((folder / "configs" / "metadata.json").read_text()).get("version", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def single_dlnet(loaded: LoadedNetwork) -> LoadedNetwork:
    """``loaded`` itself for a single DLNet; for an ensemble its localization member (the network whose maps it
    returns) with that member's input size: what needs one network's layers (Grad-CAM proposals) runs on it."""
    network = loaded.network
    if not hasattr(network, "members"):
        return loaded
    index = int(network.localization_member)
    size = tuple(int(s) for s in network.input_sizes[index])
    return LoadedNetwork(network.members[index], size, loaded.source, loaded.sha256, loaded.settings)
