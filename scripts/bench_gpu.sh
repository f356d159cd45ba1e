#!/usr/bin/env bash
# `make bench-gpu`: on a machine with an NVIDIA GPU and the CUDA build of vLLM, verify every
# model of the example fleet and of the GPU example fleet that fits the local GPU (smaller
# planned GPUs are emulated), compare the plan's settings with vLLM's defaults and the seed
# notebook's on one model, record the figures and write the dated table.
# Variables: PY (python with vLLM and this project as `llmfleet`, see bench_gpu_families.sh), FLEETS, RECORD, COMPARE_FLEET, COMPARE (model, '' to skip).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLEETS=${FLEETS:-fleet.yaml examples/gpu/fleet.yaml}
COMPARE_FLEET=${COMPARE_FLEET:-examples/gpu/fleet.yaml}
RECORD=${RECORD:-tests/data/gpu_measurements.json}
COMPARE=${COMPARE-qwen3-8b}
status=0
for fleet in $FLEETS; do
  "$PY" -m llmfleet.scripts verify -f "$fleet" --skip-unfit --record "$RECORD" || status=$?
done
if [ -n "$COMPARE" ]; then
  "$PY" -m llmfleet.scripts verify -f "$COMPARE_FLEET" -m "$COMPARE" --compare --requests 256 --concurrency 128 \
    --prompt-tokens 1024 --max-tokens 256 --record "$RECORD" || status=$?
fi
if "$PY" -m llmfleet.scripts.gpu_report "$RECORD" > docs/gpu-measurements.md.partial; then
  mv docs/gpu-measurements.md.partial docs/gpu-measurements.md
  echo "wrote docs/gpu-measurements.md"
else
  status=1
fi
exit $status
