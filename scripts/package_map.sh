#!/usr/bin/env bash
# Package the pneumonitor MONAI Deploy app as a MONAI Application Package (MAP).
#
#   scripts/package_map.sh [-m MODELS_DIR] [-t TAG] [-o BUILD_DIR] [-- extra monai-deploy package args]
#
# Run it with the deploy environment active (. .venv-deploy/bin/activate; bash apps/deploy/setup_env.sh makes it):
# `monai-deploy` is holoscan-cli's command there.
# 1. stages apps/deploy (app.py, __main__.py, requirements.txt, operators/) + pneumonitor/ into BUILD_DIR/app
#    (a MAP holds one application folder; the app imports operators and pneumonitor from next to app.py);
# 2. takes the models from MODELS_DIR (dlnet/model.ts, lsnet/model.ts) or, without -m, exports them from the
#    trained bundles with `python -m monai.bundle ckpt_export` (bundles/{dlnet,lsnet}/models/model.pt);
# 3. smoke-runs the staged app on one sample (CPU) when ../shared/data/cxr-dicom-samples exists;
# 4. runs `monai-deploy package BUILD_DIR/app -c apps/deploy/app.yaml -t TAG --platform x86_64 -m MODELS`.
#    Step 4 needs Docker (buildx) and network access to nvcr.io, PyPI and GitHub (the packager downloads its
#    artifact manifest from raw.githubusercontent.com; offline, pass a local one: -- --source artifacts.json).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(cd "$ROOT" && python -c 'import pneumonitor; print(pneumonitor.__version__)')"
TAG="pneumonitor:${VERSION}"
BUILD="$ROOT/build/map"
MODELS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -m) MODELS="$(cd "$2" && pwd)"; shift 2 ;;
    -t) TAG="$2"; shift 2 ;;
    -o) BUILD="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v monai-deploy >/dev/null; then
  echo "monai-deploy not found: run this script in the deploy environment (bash apps/deploy/setup_env.sh;" \
       ". .venv-deploy/bin/activate)" >&2
  exit 2
fi

echo "== staging the application in $BUILD/app"
rm -rf "$BUILD/app.partial"
mkdir -p "$BUILD/app.partial"
(cd "$ROOT/apps/deploy" && tar cf - --exclude=__pycache__ --exclude='*.pyc' app.py __main__.py requirements.txt operators) \
  | (cd "$BUILD/app.partial" && tar xf -)
(cd "$ROOT" && tar cf - --exclude=__pycache__ --exclude='*.pyc' pneumonitor) | (cd "$BUILD/app.partial" && tar xf -)
rm -rf "$BUILD/app"
mv "$BUILD/app.partial" "$BUILD/app"

if [[ -z "$MODELS" ]]; then
  MODELS="$BUILD/models"
  echo "== exporting TorchScript models from the bundles to $MODELS"
  for bundle in dlnet lsnet; do
    dir="$ROOT/bundles/$bundle"
    if [[ ! -f "$dir/models/model.pt" || ! -f "$dir/configs/inference.json" ]]; then
      echo "no trained $bundle: $dir/models/model.pt and $dir/configs/inference.json are needed (train the bundle," >&2
      echo "see docs/deploy.md), or pass -m MODELS_DIR holding dlnet/model.ts and lsnet/model.ts" >&2
      exit 2
    fi
    mkdir -p "$MODELS/$bundle"
    meta=()
    [[ -f "$dir/configs/metadata.json" ]] && meta=(--meta_file "$dir/configs/metadata.json")
    # the commands of the bundles' cards (docs/bundles.md): DLNet scripted; LSNet traced (its decoder walks a
    # reversed list of skips, which TorchScript cannot script) at (1, 1, *image_size) of its inference.json.
    # ckpt_export stores inference.json in the archive: the app reads the input size and operating point there.
    trace=()
    if [[ "$bundle" == lsnet ]]; then
      shape="$(python -c 'import json, sys
size = json.load(open(sys.argv[1]))["image_size"]
print(json.dumps([1, 1, *([size, size] if isinstance(size, int) else size)]))' "$dir/configs/inference.json")"
      trace=(--use_trace True --input_shape "$shape")
    fi
    (cd "$ROOT" && python -m monai.bundle ckpt_export network_def --filepath "$MODELS/$bundle/model.ts" \
      --ckpt_file "$dir/models/model.pt" --config_file "$dir/configs/inference.json" "${meta[@]}" \
      --bundle_root "$dir" "${trace[@]}")
  done
fi
for bundle in dlnet lsnet; do
  [[ -f "$MODELS/$bundle/model.ts" ]] || { echo "missing $MODELS/$bundle/model.ts" >&2; exit 2; }
done

SAMPLES="$ROOT/../shared/data/cxr-dicom-samples"
if [[ -d "$SAMPLES" && -z "${SKIP_SMOKE_TEST:-}" ]]; then
  echo "== smoke test of the staged app (CPU) on $SAMPLES/dx_image.dcm"
  smoke="$(mktemp -d)"
  mkdir "$smoke/in" && cp "$SAMPLES/dx_image.dcm" "$smoke/in/"
  (cd "$smoke" && PNEUMONITOR_DEVICE=cpu python "$BUILD/app" -i "$smoke/in" -o "$smoke/out" -m "$MODELS" -l WARN)
  ls "$smoke"/out/*/ && rm -rf "$smoke"
fi

echo "== monai-deploy package (needs Docker with buildx, and network access to nvcr.io and PyPI)"
mkdir -p "$BUILD/output"
set -x
monai-deploy package "$BUILD/app" -c "$ROOT/apps/deploy/app.yaml" -t "$TAG" --platform x86_64 \
  -m "$MODELS" --output "$BUILD/output" "$@"
