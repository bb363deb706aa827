#!/usr/bin/env bash
# The evaluation off the demo's path: a plain 5-class 3x16x16 LightningDataModule (tests/plain_data.py, synthetic) through
# conf/digits/ann.yaml and snn.yaml (SmallCNN, T = 8), then the SNN's test with the demo's evaluation (200 test samples,
# eps 0.1 and 0.2, 2 DDP processes of one thread each, as `make demo` runs it). Prints the test's wall time.
#   bash bench/plain_eval.sh [OUT] [ANN_EPOCHS] [SNN_EPOCHS]   (default runs/bench/plain_eval 30 3: a robust model,
#   so that the check rounds have survivors to work on)
set -euo pipefail
OUT=${1:-runs/bench/plain_eval}
ANN_EPOCHS=${2:-30}
SNN_EPOCHS=${3:-3}
PY=${PY:-.venv/bin/python}
DATA=(--data tests.plain_data.PlainData --data.init_args.test_size 200)
NET=(--model.init_args.net.init_args.num_classes 5 --model.init_args.net.init_args.in_channels 3
     --model.init_args.net.init_args.input_size 16)
QUIET=(--trainer.enable_progress_bar false --trainer.enable_model_summary false)
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
$PY train.py fit --config conf/digits/ann.yaml "${DATA[@]}" "${NET[@]}" "${QUIET[@]}" --trainer.max_epochs "$ANN_EPOCHS" \
  --trainer.default_root_dir "$OUT/ann" > "$OUT.ann.log" 2>&1
ANN=$(ls "$OUT"/ann/lightning_logs/version_*/checkpoints/last.ckpt | tail -1)
$PY train.py fit --config conf/digits/snn.yaml "${DATA[@]}" "${NET[@]}" "${QUIET[@]}" --trainer.max_epochs "$SNN_EPOCHS" \
  --model.init_args.ann_checkpoint "$ANN" --trainer.default_root_dir "$OUT/snn" > "$OUT.snn.log" 2>&1
SNN=$(ls "$OUT"/snn/lightning_logs/version_*/checkpoints/last.ckpt | tail -1)
start=$(date +%s.%N)
$PY train.py test --config conf/digits/snn.yaml "${DATA[@]}" "${NET[@]}" "${QUIET[@]}" --ckpt_path "$SNN" \
  --trainer.default_root_dir "$OUT/test" --trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp \
  > "$OUT.test.log" 2>&1
end=$(date +%s.%N)
echo "plain 5-class 3x16x16 SNN test (200 samples, eps 0.1 and 0.2, 2 processes): $(echo "$end - $start" | bc) s"
grep -h "worst case\|preset\|clean" "$OUT.test.log" | head -8
