#!/usr/bin/env bash
# Retrain the shipped default models from ../shared/data with the bundles' CPU recipes (issue "Ship trained weights").
#
#   bash scripts/train_default_models.sh [WORK_DIR]      # default WORK_DIR: runs/default-models
#
# 1. `pneumonitor datasets mix` builds the seeded, patient-level training mix (DLNet and LSNet datalists);
# 2. each bundle trains in a working copy under WORK_DIR with train.json + train_cpu.json (both in parallel: they
#    share the cores; resume by re-running with `--ckpt` support of the bundle if cut);
# 3. the best checkpoints (validation Dice / AUC) are copied to bundles/<name>/models/model.pt.
# The compact architecture/input size of the CPU recipe is what bundles/<name>/configs/inference.json describes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/runs/default-models}"
mkdir -p "$WORK"
pneumonitor datasets mix --out "$WORK/datalists"
for name in lsnet dlnet; do
  rm -rf "$WORK/$name"
  cp -r "$ROOT/bundles/$name" "$WORK/$name"
  rm -f "$WORK/$name/models/"*.pt
  (cd "$WORK/$name" && python -m monai.bundle run training \
      --config_file "['configs/train.json','configs/train_cpu.json']" \
      --bundle_root "$WORK/$name" --dataset_dir "$WORK/datalists" > "$WORK/$name.log" 2>&1) &
done
wait
for name in lsnet dlnet; do
  cp "$WORK/$name/models/model.pt" "$ROOT/bundles/$name/models/model.pt"
  echo "bundles/$name/models/model.pt <- $WORK/$name/models/model.pt (log: $WORK/$name.log)"
done
