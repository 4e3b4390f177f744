#!/usr/bin/env bash
# Retrain the shipped default models from ../shared/data with the bundles' CPU recipes (issue "Ship trained weights").
#
#   bash scripts/train_default_models.sh [WORK_DIR] [lsnet|dlnet ...]   # default WORK_DIR: runs/default-models; both
#
# 1. `pneumonitor datasets mix` builds the seeded, patient-level training mix (DLNet and LSNet datalists);
# 2. each bundle trains in a working copy under WORK_DIR with train.json + train_cpu.json (one after the other: on
#    2 cores, parallel runs only share the same CPU time); DLNet then continues at 320 px from that run's best
#    checkpoint (+ train_cpu_hires.json, in WORK_DIR/dlnet-hires); a killed run resumes from
#    WORK_DIR/<run>/models/resume.pt when the script is run again (the per-epoch state: weights, optimizer, LR
#    schedule, epoch, best checkpoint);
# 3. the best checkpoints (validation Dice / AUC) are copied to bundles/<name>/models/model.pt (DLNet in fp16), and
#    the run's network_def and image_size written into bundles/<name>/configs/inference.json (serve_trained_weights);
#    the 224-px DLNet gets its extent head (`pneumonitor fit-extent-head`: ridge on the training split's expert
#    scores, strength chosen on validation; severity_rule extent-head); the served DLNet is then the ensemble
#    (`pneumonitor ensemble-dlnet --weights 0,1[,1]`) of the 224-px DLNet (heatmap and extent head only), the 320-px
#    DLNet and, with DLNET_GPU=FOLDER (the paper configuration trained on a GPU by scripts/train_dlnet_gpu.sh and
#    served into a copy of bundles/dlnet with serve_trained_weights), the ResNet-50: the mean of their probabilities;
# 4. DLNet's operating point is chosen on the validation split only: `pneumonitor analyze` on the validation images,
#    then `pneumonitor evaluate --split validation --save-operating-point bundles/dlnet` writes the classification
#    threshold (ROC point nearest (0,1)) and the heatmap threshold (lowest 0-8 score MAE against the expert scores of
#    the validation patients, n >= 30) into its inference.json; the expert-scored and masked validation images are
#    then analysed again behind the chosen threshold (WORK_DIR/eval_validation_severity: the validation severity);
# 5. the test split is analyzed and evaluated once, for the model cards (WORK_DIR/eval_test/tables.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/runs/default-models}"
shift || true
NETWORKS=("${@:-lsnet dlnet}")
read -r -a NETWORKS <<< "${NETWORKS[*]}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
pneumonitor datasets mix --out "$WORK/datalists"
train_run() {  # RUN_NAME BUNDLE CONFIG...: one resumable training run of BUNDLE's CONFIGs in WORK/RUN_NAME
  local run="$1" name="$2"; shift 2
  local configs=()
  for config in "$@"; do configs+=("'configs/$config'"); done
  if [[ -f "$WORK/$run/models/resume.pt" ]]; then  # an interrupted run: continue from its last finished epoch
    cp -r "$ROOT/bundles/$name/configs/." "$WORK/$run/configs/"
    echo "resuming $run from $WORK/$run/models/resume.pt (delete it to start over)"
  else
    rm -rf "${WORK:?}/$run"
    cp -r "$ROOT/bundles/$name" "$WORK/$run"
    rm -f "$WORK/$run/models/"*.pt
    if [[ -n "${START_WEIGHTS:-}" ]]; then  # FILE:NAME, the weights the run's init_weights names
      cp "${START_WEIGHTS%%:*}" "$WORK/$run/models/${START_WEIGHTS##*:}"
    fi
  fi
  echo "training $run (log: $WORK/$run.log)"
  (cd "$WORK/$run" && python -m monai.bundle run training \
      --config_file "[$(IFS=,; echo "${configs[*]}")]" \
      --bundle_root "$WORK/$run" --dataset_dir "$WORK/datalists" >> "$WORK/$run.log" 2>&1)
}

serve_run() {  # RUN BUNDLE_DIR NAME CONFIG...: a run's best weights and its merged network_def + image_size served
  local run="$1" bundle="$2" name="$3"; shift 3
  local configs=()
  for config in "$@"; do configs+=("$WORK/$run/configs/$config"); done
  # DLNet in fp16: half the file, the model card measures that nothing changed
  python -c "import sys; from pneumonitor.networks import serve_trained_weights as serve
serve(sys.argv[1], sys.argv[4:], sys.argv[2], half_precision=sys.argv[3] == 'dlnet')" \
    "$WORK/$run/models/model.pt" "$bundle" "$name" "${configs[@]}"
  echo "$bundle/models/model.pt <- $WORK/$run/models/model.pt (network_def, image_size -> configs/inference.json)"
}

for name in "${NETWORKS[@]}"; do
  recipe=(train.json train_cpu.json)
  train_run "$name" "$name" "${recipe[@]}"
  serve_run "$name" "$ROOT/bundles/$name" "$name" "${recipe[@]}"
  if [[ "$name" == dlnet ]]; then
    # the extent head (severity) of the 224-px DLNet: fitted on the frozen network to the expert scores of the
    # training split, its ridge strength chosen on validation with every scored image counted (the gate will be the
    # ensemble's probability, not this member's); needs the LSNet just served (docs/bundles.md)
    pneumonitor fit-extent-head --datalist "$WORK/datalists/datalist.json" --classification-threshold 0 \
      --report "$WORK/extent_head.json" --quiet
    # DLNet's second stage: the 224-px run's best checkpoint continued at 320 px (train_cpu_hires.json: 12 epochs
    # of 1,000 images, lr 2e-5; its init_weights is this copy of the first stage's weights)
    START_WEIGHTS="$WORK/dlnet/models/model.pt:model_224.pt" train_run dlnet-hires dlnet "${recipe[@]}" train_cpu_hires.json
    rm -rf "${WORK:?}/dlnet-hires-bundle" && cp -r "$ROOT/bundles/dlnet" "$WORK/dlnet-hires-bundle"
    serve_run dlnet-hires "$WORK/dlnet-hires-bundle" dlnet "${recipe[@]}" train_cpu_hires.json
    # the shipped ensemble (0.6.0): the 224-px DLNet gives the heatmap and the extent head (probability weight 0:
    # its head was the better one on validation), the 320-px DLNet and, with DLNET_GPU=FOLDER (the paper
    # configuration trained on a GPU by scripts/train_dlnet_gpu.sh, served into a copy of bundles/dlnet), the
    # ResNet-50 give the probability (their mean)
    members=("$ROOT/bundles/dlnet" "$WORK/dlnet-hires-bundle") weights=0,1
    if [[ -n "${DLNET_GPU:-}" ]]; then members+=("$DLNET_GPU"); weights=0,1,1; fi
    pneumonitor ensemble-dlnet "${members[@]}" --weights "$weights" --out "$ROOT/bundles/dlnet"
  fi
done

split_images() {  # the image paths of one split of the DLNet datalist, one per line
  python -c "import json, sys; [print(i['image']) for i in json.load(open(sys.argv[1]))[sys.argv[2]]]" \
    "$WORK/datalists/datalist.json" "$1"
}
for split in validation test; do
  rm -rf "${WORK:?}/analyze_$split" "${WORK:?}/eval_$split"
  mapfile -t images < <(split_images "$split")
  # --qc warn: the model is measured on every image (the QC gate's own numbers are in bundles/qc); the qc column
  # still says what the gate would have refused
  pneumonitor analyze "${images[@]}" --out "$WORK/analyze_$split" --no-progress --qc warn
  if [[ "$split" == validation ]]; then
    extra=(--save-operating-point "$ROOT/bundles/dlnet")
  else  # test: analyzed with the operating point just chosen on validation, which evaluate reads from results.json
    extra=()
  fi
  pneumonitor evaluate --results "$WORK/analyze_$split" --reference "$WORK/datalists/datalist.json" --split "$split" \
    --out "$WORK/eval_$split" --quiet "${extra[@]}"
  if [[ "$split" == validation ]]; then
    # the validation images were analysed before the operating point existed (their 0-8 scores behind the
    # previous gate): the expert-scored and masked ones again, behind the chosen one, for the card's validation
    # severity (WORK_DIR/eval_validation_severity)
    mapfile -t scored < <(python -c "import json, sys; [print(i['image']) for i in json.load(open(sys.argv[1]))['validation']
if i.get('severity') not in (None, '') or i.get('mask')]" "$WORK/datalists/datalist.json")
    rm -rf "${WORK:?}/analyze_validation_severity" "${WORK:?}/eval_validation_severity"
    pneumonitor analyze "${scored[@]}" --out "$WORK/analyze_validation_severity" --no-progress --qc warn
    pneumonitor evaluate --results "$WORK/analyze_validation_severity" --reference "$WORK/datalists/datalist.json" \
      --split validation --out "$WORK/eval_validation_severity" --quiet
  fi
done
echo "validation: $WORK/eval_validation/tables.md; test: $WORK/eval_test/tables.md"
