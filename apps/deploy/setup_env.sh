#!/usr/bin/env bash
# Create the MONAI Deploy environment of pneumonitor: a venv of its own (default .venv-deploy/ at the repo root)
# with the MONAI Deploy App SDK 4.0.0, Holoscan 4.6, the core package (editable) and the Deploy tests' tools.
#
# Why a separate environment: with the SDK installed, every `import monai` also loads monai.deploy and Holoscan
# (+1.7 s per command, and Holoscan prints a "Current stack size ... below the recommended minimum" warning), so the
# core's `pneumonitor` commands would all pay for an app they do not run.
#
# The SDK, Holoscan and holoscan-cli are installed with --no-deps: their declared requirements add CUDA packages the
# app does not need (cupy-cuda13x, cuda-python) and upgrade pip; their other requirements are listed below instead.
# holoscan-cli 4.2.0 is the release that provides the `monai-deploy` command; tritonclient[http] is imported by the
# SDK at start-up. torch is the core's pin (2.13.0), whose CPU wheel pip finds on this machine's disk.
# The app folder (apps/deploy: app.py and operators/) goes on the venv's path through a .pth file, as pip's editable
# installs do, so `import operators` works in the tests and `python apps/deploy` needs no path set-up.
#
# Usage: bash apps/deploy/setup_env.sh [VENV_DIR]        (idempotent: re-running only checks the pins)
set -euo pipefail

DEFAULT_VENV=.venv-deploy
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/venv.sh"  # ROOT, VENV, PYTHON; creates the venv

SDK_NO_DEPS=(
  "monai-deploy-app-sdk==4.0.0"
  "holoscan-cu13==4.6.0"
  "holoscan-cli==4.2.0"
)
# the SDK trio's requirements without the CUDA ones; then the Deploy tests' tools
PINS=(
  "wheel-axle-runtime==0.0.13"
  "typeguard==4.6.1"
  "python-on-whales==0.81.0"
  "psutil==7.2.2"
  "tritonclient[http]==2.73.0"
  "colorama>=0.4"
  "cloudpickle>=2.1"
  "filelock>=3"
  "Jinja2>=3.1"
  "packaging>=23"
  "pydantic>=2"
  "requests>=2.31"
  "pytest>=8"
  "pytest-xdist>=3.5"
)

"$VENV/bin/python" -m pip install -q -e "$ROOT" "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --no-deps "${SDK_NO_DEPS[@]}"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT/apps/deploy" > "$SITE/pneumonitor_deploy_app.pth"
(cd "$VENV" && "$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
import importlib.util

import monai.deploy.core  # noqa: F401 - the SDK and Holoscan import
import torch

# the app's operators package is found through the .pth file (not imported: that is what tests/deploy does)
operators = importlib.util.find_spec("operators")
assert operators is not None and "apps/deploy/operators" in operators.origin, operators

print(f"deploy env ok: monai-deploy-app-sdk {metadata.version('monai-deploy-app-sdk')}, "
      f"holoscan {metadata.version('holoscan-cu13')}, monai {metadata.version('monai')}, torch {torch.__version__}")
PY
)
