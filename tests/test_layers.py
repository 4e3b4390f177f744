"""The core package is layered (docs/layout.md): a package imports only from the layers before it, never from the
apps, operators or scripts. Lazy imports inside functions count too: they are still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumonitor"

# docs/layout.md, in order; a module may import from its own layer and the layers before it
LAYERS = [
    {"reading", "severity", "publishing", "results", "bootstrap"},
    {"networks", "transforms", "monitoring"},
    {"datasets"},
    {"qc", "evaluation"},
    {"inference", "engines", "stage2", "duality"},
    {"cli"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
TOP_LEVEL_FILES = {"__init__", "__main__"}  # entry points, above every layer


def _imports(path: Path, root: Path) -> list[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved against its package)."""
    parts = path.relative_to(root).with_suffix("").parts
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                modules.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                modules.append(node.module)
    return modules


def layer_violations(package: Path) -> tuple[list[str], list[str]]:
    """(imports from a layer above, imports of apps/operators/scripts) in every module under ``package``."""
    root = package.parent
    upward, outward = [], []
    for path in sorted(package.rglob("*.py")):
        owner = path.relative_to(package).with_suffix("").parts[0]
        for module in _imports(path, root):
            top = module.split(".")[0]
            if top in {"apps", "operators", "scripts"}:
                outward.append(f"{path.relative_to(root)} imports {module}")
            if top != package.name or owner in TOP_LEVEL_FILES or module == package.name:
                continue
            target = module.split(".")[1]
            if target in RANK and RANK[target] > RANK[owner]:
                upward.append(f"{path.relative_to(root)} ({owner}) imports {module}")
    return upward, outward


def test_every_part_of_the_package_has_a_layer():
    owners = {path.relative_to(PACKAGE).with_suffix("").parts[0] for path in PACKAGE.rglob("*.py")}
    owners -= TOP_LEVEL_FILES
    assert owners <= set(RANK), f"not in docs/layout.md's layers: {sorted(owners - set(RANK))}"


def test_no_module_imports_from_a_layer_above_it_or_from_the_apps():
    upward, outward = layer_violations(PACKAGE)
    assert not outward, outward
    assert not upward, upward


def test_the_check_catches_upward_and_outward_imports(tmp_path):
    package = tmp_path / "pneumonitor"
    (package / "inference").mkdir(parents=True)
    (package / "severity.py").write_text("def f():\n    from pneumonitor.inference.analyzer import Analyzer\n")
    (package / "inference" / "analyzer.py").write_text("from ..severity import f\nimport apps.deploy\n")
    upward, outward = layer_violations(package)
    assert upward == ["pneumonitor/severity.py (severity) imports pneumonitor.inference.analyzer"]
    assert outward == ["pneumonitor/inference/analyzer.py imports apps.deploy"]
