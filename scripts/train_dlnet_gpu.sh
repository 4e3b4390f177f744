#!/usr/bin/env bash
# Train DLNet's paper configuration (configs/train.json: ResNet-50 at 448 px, batch 8, 30 epochs over the whole
# training mix, group-balanced) on a CUDA machine from a training pack, so that no raw dataset has to travel:
#
#   pneumonitor datasets pack --datalist runs/default-models/datalists/datalist.json --out PACK   # here, ~3 min
#   bash scripts/train_dlnet_gpu.sh PACK WORK_DIR [--time_limit_s S] [other train.json overrides]  # there
#
# configs/train_packed.json swaps the loading stage for the pack (pneumonitor.datasets.pack); configs/train_gpu.json
# adds mixed precision, cuDNN autotuning (bit-reproducibility given up for speed), one loader worker per core but
# two, and an optional wall-clock limit (ignite's TimeLimit: the run stops after the iteration that passes it; the
# best checkpoint by validation AUC so far stays in WORK_DIR/models/model.pt). Serve the result with
# pneumonitor.networks.serve_trained_weights, as scripts/train_default_models.sh does (docs/bundles.md, "GPU").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACK="$(cd "${1:?usage: train_dlnet_gpu.sh PACK WORK_DIR [overrides]}" && pwd)"
WORK="${2:?usage: train_dlnet_gpu.sh PACK WORK_DIR [overrides]}"
shift 2
rm -rf "${WORK:?}"
cp -r "$ROOT/bundles/dlnet" "$WORK"
rm -f "$WORK/models/"*.pt
WORK="$(cd "$WORK" && pwd)"
cd "$WORK"
python3 -m monai.bundle run training \
  --config_file "['configs/train.json','configs/train_packed.json','configs/train_gpu.json']" \
  --bundle_root "$WORK" --pack_dir "$PACK" "$@"
