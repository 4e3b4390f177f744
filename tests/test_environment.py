"""Everything ``scripts/setup.sh`` installs is there. Tests that need a component skip without it, so a missing install
step would otherwise show only as a skip in a green run: with ``PNEUMONITOR_REQUIRE_ALL=1`` (``scripts/test.sh``
sets it, so CI does) a missing component fails here; without the variable it is listed as a skip with its reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ALL = os.environ.get("PNEUMONITOR_REQUIRE_ALL") == "1"
BROWSER_DIR = REPO_ROOT / "tests" / "label" / "browser"


def missing_program(name: str, *fallbacks: str) -> str | None:
    if shutil.which(name) or any(Path(path).is_file() for path in fallbacks):
        return None
    return f"no `{name}` on PATH"


def missing_file(path: Path) -> str | None:
    return None if path.is_file() else f"{path} does not exist"


def missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) else f"`import {name}` fails in {sys.executable}"


def missing_in_venv(folder: str, module: str) -> str | None:
    python = REPO_ROOT / folder / "bin" / "python"
    if not python.is_file():
        return f"{python} does not exist"
    proc = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO_ROOT)
    return None if proc.returncode == 0 else f"`import {module}` fails in {folder}: {proc.stderr.strip()[-500:]}"


def missing_node_packages() -> str | None:
    wanted = json.loads((BROWSER_DIR / "package.json").read_text())["dependencies"]
    absent = [name for name in wanted if not (BROWSER_DIR / "node_modules" / name / "package.json").is_file()]
    return f"{', '.join(absent)} not in {BROWSER_DIR / 'node_modules'}" if absent else None


#: component -> (what setup installs it with, check returning the reason it is missing or None)
COMPONENTS = {
    "orthanc": ("apt-get install orthanc", lambda: missing_program("Orthanc", "/usr/sbin/Orthanc")),
    "orthanc-dicomweb": ("apt-get install orthanc-dicomweb",
                         lambda: missing_file(Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"))),
    "dciodvfy": ("apt-get install dicom3tools", lambda: missing_program("dciodvfy")),
    "chromium": ("apt-get install chromium", lambda: missing_program("chromium")),
    "node": ("the machine's Node.js (apt-get install nodejs)", lambda: missing_program("node")),
    "requests": ('pip install -e ".[dev]"', lambda: missing_module("requests")),
    "pytest-xdist": ('pip install -e ".[dev]"', lambda: missing_module("xdist")),
    ".venv-label": ("bash apps/label/setup_env.sh", lambda: missing_in_venv(".venv-label", "monailabel")),
    ".venv-deploy": ("bash apps/deploy/setup_env.sh", lambda: missing_in_venv(".venv-deploy", "monai.deploy.core")),
    "OHIF build (label app /ohif/)": ("bash apps/label/ohif/build.sh",
                                      lambda: missing_file(REPO_ROOT / "apps" / "label" / "ohif" / "dist" / "index.html")
                                      or missing_file(REPO_ROOT / "apps" / "label" / "ohif" / "dist" / "pneumonitor"
                                                      / "mode.js")),
    "browser-check node packages": (f"npm install --prefix {BROWSER_DIR.relative_to(REPO_ROOT)}",
                                    missing_node_packages),
}


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_setup_installed(component):
    installed_by, check = COMPONENTS[component]
    reason = check()
    if reason is None:
        return
    message = f"{component} is missing ({reason}); bash scripts/setup.sh installs it: {installed_by}"
    if REQUIRE_ALL:
        pytest.fail(message + " [PNEUMONITOR_REQUIRE_ALL=1]")
    pytest.skip(message)
