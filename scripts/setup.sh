#!/usr/bin/env bash
# The one setup command of pneumonitor (README; details in docs/setup.md); .ci/run runs it too.
#
#   bash scripts/setup.sh            # everything: core + tests, MONAI Deploy SDK, Debian tools, MONAI Label venv
#   bash scripts/setup.sh --core     # only the core package and its test tools (pip install -e ".[dev]")
#
# Parts:
# 1. core: `pip install -e ".[dev]"` into the current python (torch pinned to the 2.13.0 CPU wheel on this disk).
# 2. MONAI Deploy App SDK 4.0.0 + Holoscan 4.6 (apps/deploy): installed with --no-deps, because their declared
#    requirements would add CUDA packages (cupy-cuda13x, cuda-python) and upgrade pip; holoscan-cli 4.2.0 is the
#    release that provides the `monai-deploy` command. tritonclient[http] is imported by the SDK at start-up.
# 3. Debian packages (root + apt only): orthanc + orthanc-dicomweb (a real PACS for the round-trip tests; the tests
#    start their own instance on loopback), dicom3tools (dciodvfy validates the written DICOM), chromium (the
#    headless OHIF check of the label app).
# 4. MONAI Label: its own venv .venv-label/ (apps/label/setup_env.sh; monailabel 0.8.5 needs pydicom 2 and numpy 1)
#    and playwright-core for the browser check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

echo "== core: pip install -e .[dev]"
"$PYTHON" -m pip install -q -e ".[dev]"
if [[ "${1:-}" == "--core" ]]; then
  exit 0
fi

echo "== MONAI Deploy App SDK"
"$PYTHON" -m pip install -q --no-deps monai-deploy-app-sdk==4.0.0 holoscan-cu13==4.6.0 holoscan-cli==4.2.0 \
  wheel-axle-runtime==0.0.13 typeguard==4.6.1 python-on-whales==0.81.0 psutil==7.2.2
"$PYTHON" -m pip install -q "tritonclient[http]==2.73.0"

if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  echo "== Debian packages: orthanc orthanc-dicomweb dicom3tools chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    orthanc orthanc-dicomweb dicom3tools chromium >/dev/null
else
  echo "!! not root or no apt-get: install orthanc, orthanc-dicomweb, dicom3tools and chromium yourself" \
       "(the tests that need them skip with that reason)"
fi

echo "== MONAI Label environment (.venv-label)"
bash apps/label/setup_env.sh
if command -v npm >/dev/null; then
  npm install --prefix tests/label/browser --no-audit --no-fund --silent
fi
echo "setup done"
