#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, real-model tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${FAIRGPTQ_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export FAIRGPTQ_DATA_DIR="$(cd ../shared/data && pwd)"
fi
# .venv/bin first: GPTQModel builds its CPU kernels with the ninja the interop extra installs there.
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two workers (pytest-xdist), one per core; conftest.py keeps each file's tests on one worker (the files of the
# shared quantized SmolLM2 together, the longest first) and gives each worker one compute thread.
# FAIRGPTQ_TEST_WORKERS=0 runs in this process (pdb, -s).
exec .venv/bin/python -m pytest -n "${FAIRGPTQ_TEST_WORKERS:-2}" --dist loadfile "$@"
