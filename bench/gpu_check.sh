#!/usr/bin/env bash
# The one GPU check (make gpu-check; ~5 min on one GPU): on CUDA, the accelerator tests' cases, the paper recipes'
# stage chains (synthetic data of the true shape, evaluation included), one SNN training step against the naive
# snnTorch loop and the ANN, and the paper's calibration cost. The output is kept in results/gpu/<date>.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device visible to torch')" || exit 2
mkdir -p results/gpu
out="results/gpu/$(date -u +%Y-%m-%d).md"
status=0
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo '```'
  "$PY" -c "import torch; print(torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
  echo "## tests on the GPU (SRSNN_TEST_DEVICE=cuda): accelerator cases + recipe chains"
  SRSNN_TEST_DEVICE=cuda timeout 300 "$PY" -m pytest -p no:cacheprovider -q -m "" tests/test_accelerator.py \
      tests/test_recipe_chains.py || status=1
  echo "## bench/snn_step.py --device cuda --nets reference"
  timeout 120 "$PY" bench/snn_step.py --device cuda --nets reference || status=1
  echo "## bench/calibration.py --device cuda (VGG-16, 10 x 64 images, T_c = 100)"
  timeout 120 "$PY" bench/calibration.py --device cuda || status=1
  echo '```'
} 2>&1 | tee "$out"
echo "written: $out"
exit $status
