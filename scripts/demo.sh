#!/usr/bin/env bash
# The README's main command: set up, then run pipelines/demo.yaml offline end to end
# (Fair-GPTQ on SmolLM2-135M, evaluation, GPTQ export, report) and say where the report is.
# Extra arguments go to `fairgptq run`, e.g. `bash scripts/demo.sh --force` or `--out runs/mine`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${FAIRGPTQ_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export FAIRGPTQ_DATA_DIR="$(cd ../shared/data && pwd)"
fi
if [ -z "${FAIRGPTQ_MODELS_DIR:-}" ] && [ -d ../shared/models ]; then
  export FAIRGPTQ_MODELS_DIR="$(cd ../shared/models && pwd)"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
.venv/bin/fairgptq run pipelines/demo.yaml "$@"
echo "demo finished in $(( $(date +%s) - start )) s; report: runs/demo/report.md (unless --out was given)"
echo "its figures are one draw of GPTQ's rounding (they differ between machines); the report says which differences from plain GPTQ are significant"
