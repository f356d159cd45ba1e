#!/usr/bin/env bash
# Measure today's families (examples/gpu/families/fleet.yaml) on one H200 with the CUDA build
# of vLLM and record them: `scripts/bench_gpu_families.sh GROUP` runs one group, each within
# ~9 minutes of wall time (an engine start costs 60-300 s; a load test of 16 requests a few
# seconds), so one group fits one 10-minute command on the GPU machine; `all` runs them in turn.
# Each model is its own `verify` run, started only while BUDGET seconds (from the group's start)
# leave at least MIN_LEFT, and stopped (its server too) when the budget runs out; the record is
# written after each server, so what finished is kept.
# A group may end with probes (examples/gpu/families/probes): model types the planner refuses,
# started with plain `vllm serve` for at most PROBE_TIMEOUT seconds to see whether vLLM 0.26 and
# the host's transformers load them; each log goes to LOGS (or is discarded).
# Variables: PY (python with vLLM and this project importable as `llmfleet`: installed, or on a
# bare checkout PYTHONPATH=/tmp/ns with /tmp/ns/llmfleet a link to it), RECORD, REQUESTS,
# BOOT_TIMEOUT, BUDGET, MIN_LEFT, PROBE_TIMEOUT, KEEP (a folder for each server's log and
# config), LOGS (a flat folder: each server's log as MODEL.log).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECORD=${RECORD:-tests/data/gpu_measurements.json}
REQUESTS=${REQUESTS:-16}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-420}
BUDGET=${BUDGET:-540}
MIN_LEFT=${MIN_LEFT:-120}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-60}
FLEET=examples/gpu/families/fleet.yaml
PROBES=examples/gpu/families/probes
declare -A FAMILY_GROUPS=(
  [1]="nemotron-3-nano-30b qwen3-vl-4b"     # Mamba-2 hybrid (59 GiB), Qwen3-VL as text (7.5 GiB)
  [2]="qwen3-next-24l qwen35-397b-4l"       # gated-delta-net hybrids (75 GiB, 52 GiB)
  [3]="deepseek-v32-5l"                     # sparse-attention MLA (50 GiB): FlashMLA-sparse kernels
  [4]="granite-4h-tiny phi35-moe qwen3-vl-30b-a3b"  # Mamba-2 + MoE (13 GiB), windowed MoE (78 GiB), VL MoE as text (57 GiB)
  [5]="falcon-h1-7b"                        # parallel attention + Mamba-2 (14 GiB)
  [6]="qwen3-vl-30b-a3b kimi-k25-6l"        # VL MoE as text, first (its start outlasted group 4); MLA + int4 experts (51 GiB)
  # per-kind head sizes (58 GiB): needs vLLM 0.32 or later on the host; 0.26.0 reads Gemma-4's
  # global_head_dim, which transformers 5.17+ keeps only per layer (docs/planner.md)
  [7]="gemma4-31b"
)
# Flags the host's vLLM build needs, per group: its wheels lack FlashInfer's gated-delta-net
# prefill kernel for this GPU ("SM90 GDN prefill DSL kernel is unavailable"), so that group
# takes vLLM's Triton kernel.
declare -A GROUP_VLLM_ARGS=([2]="--vllm-arg=--gdn-prefill-backend=triton")
declare -A GROUP_PROBES=([6]="deepseek-v4-flash-4l")
group=${1:-}
case "$group" in
  1|2|3|4|5|6|7) selected=("$group") ;;
  all) selected=(1 2 3 4 5 6 7) ;;
  *) echo "usage: $0 1|2|3|4|5|6|7|all" >&2; exit 2 ;;
esac
[ -n "${LOGS:-}" ] && mkdir -p "$LOGS"
status=0
for g in "${selected[@]}"; do
  start=$SECONDS
  for name in ${FAMILY_GROUPS[$g]}; do
    left=$((BUDGET - (SECONDS - start)))
    if [ "$left" -lt "$MIN_LEFT" ]; then echo "$name: not started, ${left}s of the group's ${BUDGET}s left" >&2; status=1; continue; fi
    work=${KEEP:-$(mktemp -d)}
    # verify stops its server on SIGTERM; KILL follows a minute later.
    timeout -k 60 "$left" "$PY" -m llmfleet.scripts verify -f "$FLEET" -m "$name" ${GROUP_VLLM_ARGS[$g]:-} \
      --requests "$REQUESTS" --boot-timeout "$BOOT_TIMEOUT" --record "$RECORD" --keep "$work" || status=$?
    [ -n "${LOGS:-}" ] && cp "$work/$name/plan/plan.log" "$LOGS/$name.log" 2>/dev/null
    [ -z "${KEEP:-}" ] && rm -rf "$work"
  done
  for name in ${GROUP_PROBES[$g]:-}; do
    left=$((BUDGET - (SECONDS - start)))
    [ "$left" -lt 30 ] && { echo "probe $name: not started, ${left}s left" >&2; continue; }
    limit=$((left < PROBE_TIMEOUT ? left : PROBE_TIMEOUT))
    log=${LOGS:-/tmp}/probe-$name.log
    echo "probe $name: vllm serve for at most ${limit}s, log $log" >&2
    timeout -k 10 "$limit" "$PY" -m vllm.entrypoints.openai.api_server --model "$PROBES/$name" --load-format dummy \
      --skip-tokenizer-init --language-model-only --max-model-len 8192 --gpu-memory-utilization 0.9 \
      --host 127.0.0.1 --port 8199 > "$log" 2>&1
    echo "probe $name: exit $? ($(grep -m1 -oE 'GPU KV cache size: [0-9,]+ tokens|Error[^ ]*: .{0,160}' "$log" || echo 'no KV line, no error line'))" >&2
  done
done
exit $status
