#!/usr/bin/env bash
# Start the pneumonitor MONAI Label server.
#
#   apps/label/start_server.sh STUDIES [more monailabel start_server options]
#
# STUDIES: a folder of PNG/JPEG/DICOM radiographs, or a DICOMweb root such as http://127.0.0.1:8042/dicom-web
# (Orthanc). The server binds to 127.0.0.1 unless MONAI_LABEL_HOST or a --host option says otherwise; the port is
# MONAI_LABEL_PORT (8000). Extra options go to `monailabel start_server`, e.g. --conf dlnet_train_configs train_cpu.json
# Anything but a loopback address needs MONAI Label's authentication (MONAI_LABEL_AUTH_ENABLE=true and its
# MONAI_LABEL_AUTH_* settings): the server writes labels and runs training for whoever can reach it.
# Cross-origin requests are refused unless `--conf cors_origins URL[,URL]` lists origins (OHIF at /ohif is
# same-origin; see apps/label/main.py).
# The environment is .venv-label/ (apps/label/setup_env.sh), or PNEUMONITOR_LABEL_VENV.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 STUDIES [monailabel start_server options]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PNEUMONITOR_LABEL_VENV:-$ROOT/.venv-label}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import monailabel" 2>/dev/null; then
  echo "no MONAI Label environment at $VENV: run bash apps/label/setup_env.sh first" >&2
  exit 2
fi
STUDIES="$1"
shift
HOST="${MONAI_LABEL_HOST:-127.0.0.1}"
PORT="${MONAI_LABEL_PORT:-8000}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do  # a --host option overrides the variable, as it does for monailabel
  case "${args[i]}" in
    --host) HOST="${args[i + 1]:-}" ;;
    --host=*) HOST="${args[i]#--host=}" ;;
  esac
done
case "$HOST" in
  127.*|localhost|::1) ;;
  *)
    auth="$(echo "${MONAI_LABEL_AUTH_ENABLE:-false}" | tr '[:upper:]' '[:lower:]')"
    if [ "$auth" != "true" ] && [ "$auth" != "1" ]; then
      echo "refusing to serve on $HOST without authentication: set MONAI_LABEL_AUTH_ENABLE=true and the" \
           "MONAI_LABEL_AUTH_* settings of your identity provider, or bind a loopback address" >&2
      exit 2
    fi ;;
esac
# MONAI Label lists CT series by default; the app's own DICOMweb datastore lists DX and CR (--conf modalities)
DX_FILTER='{"Modality": "DX"}'
export MONAI_LABEL_DICOMWEB_SEARCH_FILTER="${MONAI_LABEL_DICOMWEB_SEARCH_FILTER:-$DX_FILTER}"
# background tasks (training, scoring) are started with this interpreter too
export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" -m monailabel.main start_server \
  --app "$ROOT/apps/label" \
  --studies "$STUDIES" \
  --host "$HOST" \
  --port "$PORT" \
  "$@"
