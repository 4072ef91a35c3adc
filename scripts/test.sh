#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite: the unit tests in tests/ and the end-to-end runs of the real
# nnUNetv2_* commands on CPU in tests/e2e/ (marked slow). Extra arguments go to pytest, e.g. the fast lane
# `bash scripts/test.sh -m "not slow"` (under 3 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
