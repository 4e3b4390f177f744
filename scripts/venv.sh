# Sourced by apps/deploy/setup_env.sh and apps/label/setup_env.sh (each app's own environment): sets ROOT (the
# repository), VENV (the script's first argument, else $ROOT/$DEFAULT_VENV) and PYTHON (the interpreter that makes
# the venv), and creates the venv when it does not exist yet.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/$DEFAULT_VENV}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
