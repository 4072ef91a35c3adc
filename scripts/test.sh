#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (unit tests and the end-to-end runs of the real
# nnUNetv2_* commands on CPU). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
