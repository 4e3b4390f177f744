#!/usr/bin/env bash
# The one setup command of pneumonitor (README; details in docs/setup.md); .ci/run runs it too.
#
#   bash scripts/setup.sh            # everything: core + tests, Debian tools, the MONAI Deploy and MONAI Label venvs
#   bash scripts/setup.sh --core     # only the core package and its test tools (pip install -e ".[dev]")
#
# Parts:
# 1. core: `pip install -e ".[dev]"` into the current python (torch pinned to the 2.13.0 CPU wheel on this disk; the
#    dev extra holds every test tool, requests included).
# 2. Debian packages (root + apt only): orthanc + orthanc-dicomweb (a real PACS for the round-trip tests; the tests
#    start their own instance on loopback), dicom3tools (dciodvfy validates the written DICOM), chromium (the
#    headless OHIF check of the label app).
# 3. MONAI Deploy: its own venv .venv-deploy/ (apps/deploy/setup_env.sh: the SDK 4.0.0 + Holoscan 4.6 would make
#    every `import monai` of the core load them, +1.7 s and a stack-size warning per command).
# 4. MONAI Label: its own venv .venv-label/ (apps/label/setup_env.sh; monailabel 0.8.5 needs pydicom 2 and numpy 1)
#    and playwright-core for the browser check.
# scripts/test.sh then fails (tests/test_environment.py) when any of these is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

echo "== core: pip install -e .[dev]"
"$PYTHON" -m pip install -q -e ".[dev]"
if [[ "${1:-}" == "--core" ]]; then
  exit 0
fi

if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  echo "== Debian packages: orthanc orthanc-dicomweb dicom3tools chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    orthanc orthanc-dicomweb dicom3tools chromium >/dev/null
else
  echo "!! not root or no apt-get: install orthanc, orthanc-dicomweb, dicom3tools and chromium yourself" \
       "(tests/test_environment.py names what is missing)"
fi

echo "== MONAI Deploy environment (.venv-deploy)"
# earlier versions of this script installed the SDK into the main python: take it out, or every core command pays
if "$PYTHON" -m pip show -q monai-deploy-app-sdk >/dev/null 2>&1; then
  "$PYTHON" -m pip uninstall -y -q monai-deploy-app-sdk holoscan-cu13 holoscan-cli
fi
bash apps/deploy/setup_env.sh

echo "== MONAI Label environment (.venv-label)"
bash apps/label/setup_env.sh
if command -v npm >/dev/null; then
  npm install --prefix tests/label/browser --no-audit --no-fund --silent
  bash apps/label/ohif/build.sh  # OHIF 3.12.10 + the radiograph MONAI Label mode, served by the label app at /ohif/
fi
echo "setup done"
