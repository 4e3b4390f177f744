#!/usr/bin/env bash
# The one test command of pneumonitor (README); .ci/run runs it after scripts/setup.sh.
# 1. the core, bundles, Deploy app and everything else with the main python (2 workers);
# 2. the MONAI Label app in its own environment (.venv-label), when it exists.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
status=0
"${PYTHON:-python3}" -m pytest -n 2 -q -p no:cacheprovider tests || status=$?
if [[ -x .venv-label/bin/python ]]; then
  .venv-label/bin/python -m pytest -q -p no:cacheprovider tests/label || status=$?
else
  echo "tests/label not run: no .venv-label (bash apps/label/setup_env.sh creates it)"
fi
exit $status
