#!/usr/bin/env bash
# Check the load plans of examples/gpu/load/fleet.yaml on one H200 with the CUDA build of vLLM:
# `llmfleet verify --load` per model (an open-loop load at the plan's per-server rate and at its
# scaling target, sent by `vllm bench serve`), vLLM's serve defaults beside the plan's flags on one
# model, repeats to show the noise, a small flag sweep. `scripts/bench_gpu_load.sh GROUP` runs one
# group within BUDGET seconds of wall time (one 10-minute command on the GPU machine): each step is
# started only when the time left covers its estimate and is stopped (`timeout`) before the budget
# ends; every load check is recorded the moment it is measured, so a step cut short keeps what it
# measured. Groups 1-4 are the five models at two loads (1 and 2 first: qwen3-8b beside vLLM's
# defaults, FP8; 3 and 4 what did not fit in them); 5 (repeats) and 6 (sweep) follow if time allows.
#
# On the GPU machine, with vLLM's wheels installed under /tmp/site: `bash scripts/bench_gpu_load.sh 1`
# (the results land in $OUT).
# Variables: PY (python with vLLM; default python3 with /tmp/site, the GPU machine's carried
# packages, and this checkout importable as `llmfleet` through /tmp/ns), OUT (results folder:
# gpu_load_measurements-GROUP.json and bench_gpu_load-GROUP.log), BUDGET (seconds, default 540),
# SECONDS_PER_LOAD (arrivals per load point, default 20), KEEP (server and bench logs).
set -uo pipefail
cd "$(dirname "$0")/.."
group=${1:-}
case "$group" in
  1|2|3|4|5|6) ;;
  *) echo "usage: $0 1-6   (1: qwen3-8b plan + vLLM defaults, qwen3-32b; 2: FP8, MoE, LoRA;" \
          "3: qwen3-32b, LoRA; 4: MoE; 5: repeats; 6: sweep)" >&2; exit 2 ;;
esac
started=$SECONDS
BUDGET=${BUDGET:-540}
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-20}
OUT=${OUT:-/tmp/llmfleet-gpu-load}
KEEP=${KEEP:-/tmp/llmfleet-gpu-load-keep}
mkdir -p "$OUT" "$KEEP"
RECORD="$OUT/gpu_load_measurements-$group.json"
exec > >(tee -a "$OUT/bench_gpu_load-$group.log") 2>&1
if [ -z "${PY:-}" ]; then
  PY=python3
  mkdir -p /tmp/ns && ln -sfn "$PWD" /tmp/ns/llmfleet
  export PYTHONPATH=/tmp/ns${PYTHONPATH:+:$PYTHONPATH}
  [ -d /tmp/site ] && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0} PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
FLEET=examples/gpu/load/fleet.yaml

left() { echo $((BUDGET - (SECONDS - started))); }
status=0

# step NEEDED_SECONDS LABEL -- verify arguments...: run when NEEDED_SECONDS are left, stopped 10 s before the budget.
step() {
  local needed=$1 label=$2; shift 3
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$needed" ]; then
    echo "== skipped $label: $remaining s left, it needs about $needed s"
    return 0
  fi
  echo "== $label ($remaining s left, $(date -u +%T))"
  timeout -k 15 $((remaining - 10)) "$PY" -m llmfleet.scripts verify -f "$FLEET" "$@" --seconds "$SECONDS_PER_LOAD" \
    --boot-timeout 300 --keep "$KEEP" --record "$RECORD"
  local code=$?
  [ "$code" -eq 0 ] || status=$code
  echo "== $label: exit $code after $((SECONDS - started)) s"
}

# A missing package costs seconds here rather than an engine start (one import of vLLM, ~30 s).
if ! timeout 120 "$PY" -c 'import sys, vllm, llmfleet.scripts.verify_load, vllm.entrypoints.cli.benchmark.serve
print("vLLM", vllm.__version__, "python", sys.version.split()[0])'; then
  echo "vllm bench serve cannot start here (above: the import that failed); nothing was run" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# Estimates: a cold engine start 90-150 s, a load point ~35 s (arrivals, warm-up, the bench's start).
case "$group" in
  1)
    step 230 "qwen3-8b: the plan's flags and vLLM's defaults" -- -m qwen3-8b --load --compare
    step 190 "qwen3-32b" -- -m qwen3-32b --load
    ;;
  2)
    step 190 "mistral-small-24b-fp8" -- -m mistral-small-24b-fp8 --load
    step 190 "qwen3-30b-a3b (MoE)" -- -m qwen3-30b-a3b --load
    step 160 "qwen3-8b-lora" -- -m qwen3-8b-lora --load
    ;;
  3)
    step 190 "qwen3-32b" -- -m qwen3-32b --load
    step 160 "qwen3-8b-lora" -- -m qwen3-8b-lora --load
    ;;
  4)
    step 240 "qwen3-30b-a3b (MoE)" -- -m qwen3-30b-a3b --load
    ;;
  5)
    step 300 "qwen3-8b repeats: plan and defaults, 3 runs of each point" -- -m qwen3-8b --load --compare --repeats 3
    ;;
  6)
    step 300 "qwen3-8b sweep at the scaling target: plan, defaults, max_num_seqs x max_num_batched_tokens" -- \
      -m qwen3-8b --sweep --point max-within-slo
    ;;
esac
echo "== group $group done in $((SECONDS - started)) s; results in $RECORD"
ls -l "$OUT"
exit $status
