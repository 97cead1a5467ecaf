#!/usr/bin/env bash
# gpu_check.sh: every GPU check in one run, for a lent NVIDIA GPU (the device tool runs it as one command).
#   1. the tests marked `gpu` (bf16 training on CUDA);
#   2. MFU of the compiled bf16 training step at d_model 512 and 1024 (`scaling bench --compile`);
#   3. sweep throughput, runs per hour, with 1 and with 4 cells packed on the GPU (analysis/gpu_packing.yaml);
#   4. one rank's step time and peak memory unsharded and under FSDP, beside the memory plan's estimate
#      (analysis/bench_memory.py: calibrates scaling/memory.py's bf16 activation count on a real GPU);
#   5. FP8 against BF16: compiled step time, tokens/s and MFU (of the bf16 peak) of one MoE in train.precision=bf16
#      and fp8 (torchao float8 linears on FP8 tensor cores; expert GEMMs quantized, in bf16 grouped GEMMs);
#   6. the MFU of every model shape of the isoflop and lr_batch presets (`scaling bench --sweep`), kept in
#      $OUT/cache/measured_mfu.json: copied into a cache folder (scaling/gpus.py), the presets' dry runs cost
#      their cells at it instead of launcher.assumed_mfu;
#   7. the pipeline units' measured times on the GPU against their FLOPs-only cost, and whether the measured weights
#      change the balanced split (analysis/layout_unit_times.py);
#   8. a real pipeline on this machine's CPU cores, 4 gloo processes: the even and the balanced split trained, the
#      measured step-time ratio against the layout simulation's, the losses against one process
#      (analysis/bench_pipeline.py --procs 4; the 2-core CI machine can only run 2).
# Results go to $OUT (or ./gpu_check_out): gpu_check.txt with every number, and the logs.
#   bash analysis/gpu_check.sh                 # on the GPU machine, from the repository root
#   GPU_CHECK_SMOKE=1 bash analysis/gpu_check.sh   # on a CPU: the same steps, tiny, to check the script itself
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.txt"
export WANDB_MODE=disabled SCALING_RESULTS="$OUT/results" SCALING_CACHE="$OUT/cache"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SMOKE=${GPU_CHECK_SMOKE:-0}
say() { echo "$*" | tee -a "$REPORT"; }
: > "$REPORT"
say "== gpu_check $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
say "torch: $($PY -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())')"

# 1. tests marked gpu
if [ "$SMOKE" = 1 ]; then say "-- 1. gpu tests: skipped (smoke)"; else
  timeout 300 $PY -m pytest -q -m gpu tests >"$OUT/gpu_tests.log" 2>&1; say "-- 1. gpu tests: exit $? ($(tail -1 "$OUT/gpu_tests.log"))"
fi

# 2. MFU, compiled bf16, at d_model 512 and 1024
for d in 512 1024; do
  if [ "$SMOKE" = 1 ]; then shape="model.d_model=64 model.n_layers=2 model.d_expert=64 train.batch_size=4"
  else shape="model.d_model=$d model.n_layers=8 model.n_heads=$((d / 64)) model.d_expert=$((d / 2)) model.n_experts=16 model.top_k=4 model.seq_len=1024 train.batch_size=32"; fi
  timeout 600 $PY -m scaling.cli bench $shape --compile --rounds 5 >"$OUT/bench_d$d.log" 2>&1
  say "-- 2. bench d_model=$d (compiled): exit $? | $(tr '\n' ' ' < "$OUT/bench_d$d.log" | tail -c 400)"
done

# 3. runs per hour, 1 vs 4 cells per GPU
budget=${GPU_CHECK_BUDGET:-1e14}; [ "$SMOKE" = 1 ] && budget=2e10
extra=(); [ "$SMOKE" = 1 ] && extra=("base=['model.d_model=32','model.n_heads=2','model.d_expert=32','train.batch_size=4','wandb.mode=disabled']")
for packed in 1 4; do
  name="packing_$packed"
  t0=$(date +%s.%N)
  if [ "$SMOKE" = 1 ]; then opts=(--workers "$packed" --device cpu); else opts=(--runs-per-gpu "$packed"); fi
  timeout 900 $PY -m scaling.cli sweep analysis/gpu_packing.yaml "budgets=[$budget]" "name=$name" "${extra[@]}" \
    --no-probe --no-progress "${opts[@]}" >"$OUT/sweep_$packed.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  n=$(ls "$SCALING_RESULTS/$name/runs" 2>/dev/null | wc -l)
  say "-- 3. $packed run(s) per GPU: exit $rc, $n cells in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s = $(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN{printf "%.0f", n*3600/(b-a)}') runs/hour"
done
# 4. memory: measured peak against the plan, unsharded and FSDP (one rank: two ranks cannot share one GPU)
if [ "$SMOKE" = 1 ]; then shape="model.d_model=64 model.n_layers=2 train.batch_size=4"
else shape="model.d_model=1024 model.n_layers=8 model.n_heads=16 model.d_expert=512 model.n_experts=32 model.top_k=4 model.seq_len=2048 model.vocab_size=50304 train.batch_size=8"; fi
timeout 600 $PY analysis/bench_memory.py $shape --steps 5 >"$OUT/bench_memory.log" 2>&1
say "-- 4. memory (single vs fsdp): exit $? | $(grep -v -i warn "$OUT/bench_memory.log" | tail -3 | tr '\n' ' ')"
# 5. fp8 vs bf16 (the same model, the same compiled step; FP8 pays off on wide GEMMs)
if [ "$SMOKE" = 1 ]; then shape="model.d_model=64 model.n_layers=2 model.d_expert=64 train.batch_size=4"; copt=""
else shape="model.d_model=2048 model.n_layers=4 model.n_heads=16 model.d_expert=1024 model.n_experts=16 model.top_k=2 model.seq_len=2048 train.batch_size=8"; copt="--compile"; fi
for p in bf16 fp8; do
  timeout 600 $PY -m scaling.cli bench $shape train.precision=$p $copt --rounds 5 >"$OUT/bench_$p.log" 2>&1
  say "-- 5. bench $p: exit $? | $(grep -v -i warn "$OUT/bench_$p.log" | tr '\n' ' ' | tail -c 400)"
done
# 6. measured MFU per shape of the GPU presets (kept for their dry runs)
if [ "$SMOKE" = 1 ]; then sweeps="demo"; else sweeps="isoflop lr_batch"; fi
for s in $sweeps; do
  timeout 300 $PY -m scaling.cli bench --sweep "$s" data.train_tokens=1e11 --rounds 2 >"$OUT/bench_sweep_$s.log" 2>&1
  say "-- 6. bench --sweep $s: exit $? | $(grep -v -i warn "$OUT/bench_sweep_$s.log" | tail -4 | tr '\n' ' ')"
done
# 7. pipeline unit times on the GPU
timeout 300 $PY analysis/layout_unit_times.py --pp 8 >"$OUT/layout_unit_times.log" 2>&1
say "-- 7. layout unit times: exit $? | $(grep -v -i warn "$OUT/layout_unit_times.log" | tail -8 | tr '\n' ' ')"
# 8. a real 4-stage pipeline on CPU cores (gloo)
if [ "$SMOKE" = 1 ]; then procs=2; else procs=4; fi
timeout 600 $PY analysis/bench_pipeline.py --procs $procs >"$OUT/bench_pipeline.log" 2>&1
say "-- 8. pipeline, $procs processes: exit $? | $(tail -4 "$OUT/bench_pipeline.log" | tr '\n' ' ')"
say "== done"
