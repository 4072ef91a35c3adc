#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite: the unit tests in tests/ and the end-to-end runs of the real
# nnUNetv2_* commands on CPU in tests/e2e/ (marked slow). Extra arguments go to pytest, e.g. the fast lane
# `bash scripts/test.sh -m "not slow"`. The suite runs on 2 pytest-xdist worker processes, each taking whole test
# files (their module fixtures run once); `-n N` sets another count, `-n 0` runs in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
workers=(-n 2 --dist loadfile)
for arg in "$@"; do
    case $arg in -n|-n[0-9]*|--numprocesses*) workers=() ;; esac
done
exec python -m pytest "${workers[@]}" "$@"
