#!/usr/bin/env bash
# Measure today's families (examples/gpu/families/fleet.yaml) on one H200 with the CUDA build
# of vLLM and record them: `scripts/bench_gpu_families.sh GROUP` runs one group, each within
# ~9 minutes of wall time (an engine start costs 60-120 s; a load test of 16 requests a few
# seconds), so one group fits one 10-minute command on the GPU machine; `all` runs them in turn.
# Variables: PY (python with vLLM and this project importable as `llmfleet`: installed, or on a
# bare checkout PYTHONPATH=/tmp/ns with /tmp/ns/llmfleet a link to it), RECORD, REQUESTS,
# BOOT_TIMEOUT, KEEP (a folder for each server's log and config).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECORD=${RECORD:-tests/data/gpu_measurements.json}
REQUESTS=${REQUESTS:-16}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-420}
FLEET=examples/gpu/families/fleet.yaml
declare -A FAMILY_GROUPS=(
  [1]="nemotron-3-nano-30b qwen3-vl-4b"     # Mamba-2 hybrid (59 GiB), Qwen3-VL as text (7.5 GiB)
  [2]="qwen3-next-24l qwen35-397b-4l"       # gated-delta-net hybrids (75 GiB, 52 GiB)
  [3]="deepseek-v32-5l"                     # sparse-attention MLA (50 GiB): FlashMLA-sparse kernels
  [4]="granite-4h-tiny phi35-moe qwen3-vl-30b-a3b"  # Mamba-2 + MoE (13 GiB), windowed MoE (78 GiB), VL MoE as text (57 GiB)
)
group=${1:-}
case "$group" in
  1|2|3|4) selected=("$group") ;;
  all) selected=(1 2 3 4) ;;
  *) echo "usage: $0 1|2|3|4|all" >&2; exit 2 ;;
esac
status=0
for g in "${selected[@]}"; do
  models=()
  for name in ${FAMILY_GROUPS[$g]}; do models+=(-m "$name"); done
  "$PY" -m llmfleet.scripts verify -f "$FLEET" "${models[@]}" --requests "$REQUESTS" --boot-timeout "$BOOT_TIMEOUT" \
    --record "$RECORD" ${KEEP:+--keep "$KEEP"} || status=$?
done
exit $status
