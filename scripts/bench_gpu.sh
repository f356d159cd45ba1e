#!/usr/bin/env bash
# `make bench-gpu`: on a machine with an NVIDIA GPU and the CUDA build of vLLM, verify every
# model of the GPU example fleet that fits the local GPU, compare the plan's settings with
# vLLM's defaults and the seed notebook's on one of them, record the figures and write the
# dated table. Variables: PY (python with vLLM), FLEET, RECORD, COMPARE (model, '' to skip).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLEET=${FLEET:-examples/gpu/fleet.yaml}
RECORD=${RECORD:-tests/data/gpu_measurements.json}
COMPARE=${COMPARE-qwen3-8b}
status=0
"$PY" -m scripts verify "$FLEET" --skip-unfit --record "$RECORD" || status=$?
if [ -n "$COMPARE" ]; then
  "$PY" -m scripts verify "$FLEET" -m "$COMPARE" --compare --requests 512 --concurrency 256 \
    --prompt-tokens 1024 --max-tokens 256 --record "$RECORD" || status=$?
fi
"$PY" -m scripts.gpu_report "$RECORD" > docs/gpu-measurements.md
echo "wrote docs/gpu-measurements.md"
exit $status
