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
exec .venv/bin/python -m pytest "$@"
