#!/usr/bin/env bash
# The GPU checks and benchmarks in one command, on one CUDA GPU:
#   1. benchmarks/limit.py --accelerator gpu (alone on the machine: it times epochs);
#   2. at once, in parallel: `python run.py trainer=gpu` end to end in fp32 and in bf16-mixed with
#      channels_last, the domain-adaptation preset on the GPU, and the transfer table's three pairs
#      (benchmarks/transfer_table.py: digits, imagenet, minilm where its package is installed) as one
#      process per (cell, seed) job,
#      JOBS at a time, the largest cells first and seed by seed, the whole phase cut at DEADLINE seconds;
#   3. one table from every finished job, and a summary.
#
#   bash benchmarks/gpu.sh [OUTDIR=outputs/gpu] [JOBS=12] [DEADLINE=420]
set -u
out=$(realpath -m "${1:-outputs/gpu}"); jobs=${2:-12}; deadline=${3:-420}
py=${PYTHON:-python}
trainer=${TRAINER:-trainer=gpu}   # TRAINER=trainer=cpu and TT_ARGS="--steps-small 8 ..." make a dry run
tt_args=${TT_ARGS:-}; seeds=${TT_SEEDS:-0 1 2}; pretrain_epochs=${PRETRAIN_EPOCHS:-30}; da_args=${DA_ARGS:-}
mkdir -p "$out/tt"
quiet="trainer.enable_progress_bar=false callbacks.progress_bar=null callbacks.model_summary=null"
summary="$out/summary.log"
say() { echo "$*" | tee -a "$summary"; }

say "== $(date -u +%FT%TZ) $($py -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"

# 1. the compute limit, alone
if [ -z "${SKIP_LIMIT:-}" ]; then
  timeout 120 $py benchmarks/limit.py --accelerator gpu > "$out/limit.log" 2>&1
  say "limit.py rc=$?"; grep -E "framework/limit|^\|" "$out/limit.log" | tee -a "$summary"
fi

# 2. everything else at once, ending by $end
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
end=$(( $(date +%s) + deadline ))
(
  $py run.py $trainer trainer.max_epochs=3 seed=0 hydra.run.dir="$out/e2e_fp32" $quiet > "$out/e2e.log" 2>&1
  echo "e2e fp32 rc=$?" >> "$out/e2e.log"
  $py run.py $trainer trainer.max_epochs=3 seed=0 trainer.precision=bf16-mixed module.channels_last=true \
    hydra.run.dir="$out/e2e_bf16" $quiet >> "$out/e2e.log" 2>&1
  echo "e2e bf16 rc=$?" >> "$out/e2e.log"
  timeout $(( end - $(date +%s) )) $py run.py experiment=da_digits_m $trainer seed=0 hydra.run.dir="$out/da_preset" $quiet $da_args > "$out/da.log" 2>&1
  echo "da preset rc=$?" >> "$out/da.log"
) &
side=$!

weights="$out/pretrain/checkpoints/last.ckpt"
(timeout "$deadline" $py run.py experiment=pretrain_digits $trainer trainer.max_epochs=$pretrain_epochs seed=0 logger=none \
  callbacks.test_figures=null hydra.run.dir="$out/pretrain" $quiet > "$out/pretrain.log" 2>&1; touch "$out/pretrain.finished") &

job() {  # pair target size seed
  local name="$1-$2-$3-$4" left
  if [ "$1" = digits ]; then
    while [ ! -e "$out/pretrain.finished" ]; do sleep 2; done
    grep -q "done:" "$out/pretrain.log" || { echo "job $name skipped: pretraining failed"; return; }
  fi
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 20 ] || { echo "job $name skipped: out of time"; return; }
  timeout "$left" $py benchmarks/transfer_table.py --pairs "$1" --targets "$2" --sizes "$3" --seeds "$4" \
    --weights "$weights" --out "$out/tt/$name" $tt_args $trainer > "$out/tt/$name.log" 2>&1
  echo "job $name rc=$?"
}
export -f job; export out weights end py trainer tt_args
for seed in $seeds; do
  for cell in "imagenet digits_m large" "digits digits_m large" "imagenet digits large" "digits digits large" \
              "minilm rotten_tomatoes large" "minilm bbc_news large" \
              "imagenet digits_m small" "imagenet digits small" "digits digits_m small" "digits digits small" \
              "minilm rotten_tomatoes small" "minilm bbc_news small"; do
    echo "$cell $seed"
  done
done | xargs -P "$jobs" -L 1 bash -c 'job "$@"' _ | tee -a "$summary"
wait "$side"

# 3. the results
grep -h "done:" "$out/pretrain.log" | sed 's/^/pretrain: /' | tee -a "$summary"
grep -hE "rc=|done:" "$out/e2e.log" "$out/da.log" | tee -a "$summary"
cat "$out"/tt/*/runs.jsonl > "$out/tt_runs.jsonl" 2>/dev/null
$py benchmarks/transfer_table.py --report "$out"/tt/*/ --out "$out/tt_all" > "$out/tt_report.log" 2>&1
cp "$out/tt_all/table.md" "$out/tt_table.md" 2>/dev/null
cat "$out/tt_table.md" >> "$summary" 2>/dev/null
say "== $(date -u +%FT%TZ) done"
