# Every target creates .venv on first use from the pinned lock; nothing to install by hand.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FLEET ?= fleet.yaml
# The model `make up` serves (default: the first with adapters), e.g.
# make up FLEET=examples/image/fleet.yaml MODEL=sd35-turbo for the image model's stand-in.
MODEL ?=

.PHONY: up down test test-fast bench bench-gpu synth lint schema clean

$(STAMP): requirements/lock.txt requirements/gateway-lock.txt pyproject.toml package.json
	bash scripts/bootstrap.sh
	touch $(STAMP)

## up: the main job — plan fleet.yaml, then run it locally (emulated AWS + real vLLM on CPU)
up: $(STAMP)
	$(VENV)/bin/llmfleet plan -f $(FLEET)
	$(VENV)/bin/llmfleet local up -f $(FLEET) $(if $(MODEL),--model $(MODEL))

## down: stop everything `make up` started
down: $(STAMP)
	$(VENV)/bin/llmfleet local down

## test: the whole suite (unit, synth, integration, e2e), as CI runs it
test: $(STAMP)
	$(PY) -m pytest -q

## test-fast: unit tests only
test-fast: $(STAMP)
	$(PY) -m pytest -q -m unit

## bench: benchmarks that print figures and ratios
bench: $(STAMP)
	$(PY) -m llmfleet.scripts.bench

## bench-gpu: on an NVIDIA GPU with the CUDA build of vLLM: verify the GPU example fleet, compare settings, write docs/gpu-measurements.md
bench-gpu:
	PY=$${PY:-$(PY)} bash scripts/bench_gpu.sh

## synth: synthesize the CDK app for fleet.yaml into cdk.out (no AWS credentials needed)
synth: $(STAMP)
	npx cdk synth --quiet

schema: $(STAMP)
	$(VENV)/bin/llmfleet schema -o fleet.schema.json
	$(VENV)/bin/llmfleet schema --consumers -o consumers.schema.json

clean:
	rm -rf $(VENV) .venv-gateway node_modules cdk.out .pytest_cache .hypothesis
