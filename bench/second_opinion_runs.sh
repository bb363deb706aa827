#!/usr/bin/env bash
# A pipeline's second opinion (<results>/second_opinion/): for every seed of its run folder (or the folder itself, one
# seed) and both SNNs (dense, HYDRA 90 %), export the fine-tuned model, attack it with bench/second_opinion.py (--snn:
# ASSG + SA-PGD and HART at the script's own settings; --strong: a reviewer's budget through the 3 paths the repo's
# ranking put first), and write README.md with each per-sample comparison (`report.py compare`) as printed and how
# many of the attack's adversarial examples (kept beside its per-sample file) fool the repo's own model. Two
# models run at a time, one thread each.
#
#     bash bench/second_opinion_runs.sh [runs/pipeline/digits-seeds] [results/digits] [digits] [200]
#     bash bench/second_opinion_runs.sh runs/pipeline/mnist5k results/mnist5k mnist5k 100
# README_ONLY=1 rewrites README.md from the attack files already there.
set -euo pipefail
PY=${PY:-python}
RUNS=${1:-runs/pipeline/digits-seeds}
RES=${2:-results/digits}
DATA=${3:-digits}
SAMPLES=${4:-200}
OUT=$RES/second_opinion
mkdir -p "$OUT"
export OMP_NUM_THREADS=1

if [ -z "${README_ONLY:-}" ]; then
  WORK=$(mktemp -d)
  jobs=()
  seeds=("$RUNS"/seed*)
  [ -e "${seeds[0]}" ] || seeds=("$RUNS")  # one seed: the stages are in the run folder itself
  for seed_dir in "${seeds[@]}"; do
    seed=$([ "$seed_dir" = "$RUNS" ] && echo . || basename "$seed_dir")
    for run in snn hydra90_snn; do
      config=$(ls -d "$seed_dir/${run}_test"/test/version_*/config.yaml | tail -1)
      model="$WORK/$seed.$run.safetensors"
      $PY export.py --config "$config" --ckpt_path "$seed_dir/$run" --out "$model" >/dev/null
      # the paths the repo's own ranking put first at the smallest epsilon (attacks.json), for --strong
      mapfile -t paths < <($PY -c "import json,sys; r=json.load(open(sys.argv[1])); print('\n'.join(next(iter(r['eps'].values()))['top_k']))" \
        "$(dirname "$config")/evaluation/attacks.json")
      mkdir -p "$OUT/$seed"
      opts="--data $DATA --samples $SAMPLES --eps 0.1 0.2"
      jobs+=("$PY bench/second_opinion.py $model --snn $opts --out $OUT/$seed/${run}_test.theirs_snn.json")
      jobs+=("$PY bench/second_opinion.py $model --strong --paths $(printf "'%s' " "${paths[@]}")$opts --out $OUT/$seed/${run}_test.theirs.json")
    done
  done
  printf '%s\n' "${jobs[@]}" | xargs -d '\n' -P 2 -I{} bash -c '{} >/dev/null 2>&1 || { echo "failed: {}" >&2; exit 255; }'
  rm -rf "$WORK"
fi

{
  echo "# A second opinion on the $DATA SNNs"
  echo
  echo "Written by \`bash bench/second_opinion_runs.sh $RUNS $RES $DATA $SAMPLES\`: attacks run outside the"
  echo "repo's evaluator on the exported dense and HYDRA 90 % SNN of each seed, each example judged on the deployed model, on"
  echo "the same $SAMPLES test images (the script's seed 1234, not the repo's): \`--snn\` (SA-PGD-100 × 3 starts and"
  echo "APGD-CE-100 through ASSG at A = 0.35, 0.425, 0.49 and HART at γ = 0.5, 1, 2), \`--strong\` (through the 3 paths the"
  echo "repo's ranking put first: PGD-50 × 3 restarts, APGD-CE-50, targeted APGD-DLR-50 over every wrong class,"
  echo "Square-2000). Each table: \`report.py compare\` of the repo's \`evaluation/[<seed>/]<run>.per_sample.json\` and"
  echo "the attack's file."
  for f in "$OUT"/seed*/*.json "$OUT"/*.json; do
    [ -e "$f" ] || continue
    seed=$(basename "$(dirname "$f")")
    [ "$seed" = second_opinion ] && seed=.
    run=$(basename "$f" | cut -d. -f1)
    kind=$(basename "$f" .json | cut -d. -f2)
    echo
    echo "## $([ "$seed" = . ] || echo "$seed / ")$run: $([ "$kind" = theirs_snn ] && echo 'ASSG + SA-PGD and HART (`--snn`)' || echo '`--strong`')"
    echo
    $PY report.py compare "$RES/evaluation/$seed/$run.per_sample.json" "$f"
    examples="${f%.json}.adversarial.safetensors.gz"  # written by bench/opinion.py beside its per-sample file
    if [ -e "$examples" ]; then
      seed_dir=$([ "$seed" = . ] && echo "$RUNS" || echo "$RUNS/$seed")
      config=$(ls -d "$seed_dir/$run"/test/version_*/config.yaml | tail -1)
      echo
      echo "Their adversarial examples judged on the repo's own model (\`bench/judge_examples.py\`, \`$(basename "$examples")\`):"
      $PY bench/judge_examples.py "$config" "$seed_dir/${run%_test}" "$examples" 2>/dev/null | tail -1
    fi
  done
} >"$OUT/README.md"
echo "wrote $OUT/README.md"
