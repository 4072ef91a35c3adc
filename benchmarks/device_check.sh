#!/usr/bin/env bash
# The GPU check, run on the GPU machine from the repository root (see benchmarks/device_check.py's docstring).
#
# Where nnU-Net is not installed there, first run `python benchmarks/device_env.py copy` on a machine that has it and
# bring benchmarks/.device_deps along with the repository.
# BUDGET_S (default 540) bounds the check in seconds.
# Results: $OUT/device_check.json, $OUT/device_check.md, $OUT/device_check.log
set -o pipefail
cd "$(dirname "$0")/.."
deps=benchmarks/.device_deps
if [ ! -f "$deps/MANIFEST.json" ]; then
    echo "device_check.sh: $deps is missing; run 'python benchmarks/device_env.py copy' on a machine with" \
         "nnU-Net installed and bring benchmarks/.device_deps along" >&2
    exit 2
fi
out="${OUT:-$PWD/device_check_results}"
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/$deps${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/device_check.log"
python3 benchmarks/device_check.py --out "$out" --budget-s "${BUDGET_S:-540}" "$@" 2>&1 | tee -a "$out/device_check.log"
