#!/usr/bin/env bash
# Set up .venv if needed, then run the whole pipeline on embedded synthetic data on CPU (see README).
# Extra arguments go to `nnunet-transfer demo`, e.g. `bash scripts/demo.sh --epochs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec nnunet-transfer demo "$@"
