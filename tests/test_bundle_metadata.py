"""Offline checks of both bundles' layout and metadata.

MONAI's ``verify_metadata`` downloads its JSON schema, which cannot be done here. The schema below is written from
the MONAI Bundle specification's list of mandatory metadata keys and tensor-format keys (nothing is copied from the
published schema file): it is what the specification documents as required, checked with ``jsonschema``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = [REPO / "bundles" / "dlnet", REPO / "bundles" / "lsnet"]

_TENSOR_KEYS = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                "channel_def"]
_TENSOR = {
    "type": "object",
    "required": _TENSOR_KEYS,
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 1},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
#: the MONAI Bundle specification's mandatory metadata keys; inputs need a modality; ``image`` in, ``pred`` out
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
                 "description", "authors", "copyright", "network_data_format"],
    "properties": {
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "changelog": {"type": "object"},
        "monai_version": {"type": "string"},
        "pytorch_version": {"type": "string"},
        "numpy_version": {"type": "string"},
        "required_packages_version": {"type": "object", "additionalProperties": {"type": "string"}},
        "task": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "authors": {"type": "string"},
        "copyright": {"type": "string"},
        "references": {"type": "array", "items": {"type": "string"}},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": {"allOf": [_TENSOR, {"required": ["modality"]}]},
                },
                "outputs": {"type": "object", "required": ["pred"], "additionalProperties": _TENSOR},
            },
        },
    },
}


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_layout(bundle: Path) -> None:
    for name in ("LICENSE", "configs/metadata.json", "configs/train.json", "configs/evaluate.json",
                 "configs/inference.json", "configs/multi_gpu_train.json", "configs/train_cpu.json",
                 "configs/logging.conf", "docs/README.md", "docs/data_license.txt", "models/.gitignore"):
        assert (bundle / name).is_file(), name


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_metadata_is_valid(bundle: Path) -> None:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(metadata, METADATA_SCHEMA)
    assert "pneumonitor" in metadata["required_packages_version"]


def test_schema_rejects_what_the_specification_requires() -> None:
    metadata = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())
    broken = json.loads(json.dumps(metadata))
    del broken["network_data_format"]["outputs"]["pred"]["dtype"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, METADATA_SCHEMA)
    broken = {k: v for k, v in metadata.items() if k != "copyright"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, METADATA_SCHEMA)


def test_dlnet_declares_its_heatmap_output() -> None:
    outputs = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]
    assert outputs["heatmap"]["num_channels"] == 128


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_inference_config_keeps_the_pipeline_contract(bundle: Path) -> None:
    """``pneumonitor analyze`` reads ``network_def`` (plain constructor arguments) and ``image_size`` from it."""
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    net_def = config["network_def"]
    assert net_def["_target_"].startswith("pneumonitor.networks.")
    for key, value in net_def.items():
        if not key.startswith("_"):
            assert not (isinstance(value, str) and value[:1] in "$@%"), f"{key} must be a literal"
    assert isinstance(config["image_size"], list) and len(config["image_size"]) == 2


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_config_target_resolves(bundle: Path) -> None:
    from monai.bundle.config_item import ComponentLocator

    locator = ComponentLocator()
    for path in sorted((bundle / "configs").glob("*.json")):
        for target in _targets(json.loads(path.read_text())):
            assert locator.get_component_module_name(target) is not None or "." in target, (path.name, target)
            if "." in target:
                module, _, name = target.rpartition(".")
                imported = __import__(module, fromlist=[name])
                assert hasattr(imported, name), (path.name, target)


@pytest.mark.parametrize("bundle", [*BUNDLES, REPO / "bundles" / "qc"], ids=lambda p: p.name)
def test_bundle_is_relocatable_and_reports_its_card_metrics(bundle: Path) -> None:
    """``bundle_root`` defaults to the bundle folder itself (``"."``, as in MONAI's model zoo; the scripts pass
    ``--bundle_root``), and ``eval_metrics`` holds the card's numbers, none left empty."""
    for path in sorted((bundle / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        if "bundle_root" in config:
            assert config["bundle_root"] == ".", path.name
    metrics = json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert metrics and all(isinstance(value, (int, float)) for value in metrics.values()), metrics
    card = (bundle / "docs" / "README.md").read_text()
    for name, value in metrics.items():
        shown = {f"{value:g}", f"{value:.2f}", f"{value:.3f}", f"{100 * value:.2f} %", f"{100 * value:.1f} %",
                 f"{100 * value:.0f} %"}
        assert any(text in card for text in shown), f"{name} = {value} is not in the card"
