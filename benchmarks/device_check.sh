#!/usr/bin/env bash
# The GPU check, as it runs ON the lent device machine (see benchmarks/device_check.py's docstring).
#
# Before the call, here in the repository root:   python benchmarks/device_env.py copy
# The call (one, from the checkout the session was started in):
#   run(command="bash benchmarks/device_check.sh", carry=["benchmarks/.device_deps"], timeout_s=600)
# BUDGET_S (default 540) bounds the check; e.g. BUDGET_S=300 leaves device time to run it a second time.
# Results: $OUT/device_check.json, $OUT/device_check.md, $OUT/device_check.log
set -o pipefail
cd "$(dirname "$0")/.."
deps=benchmarks/.device_deps
if [ ! -f "$deps/MANIFEST.json" ]; then
    echo "device_check.sh: $deps is missing; run 'python benchmarks/device_env.py copy' here first and name" \
         "benchmarks/.device_deps in the run call's carry list" >&2
    exit 2
fi
out="${OUT:-$PWD/device_check_results}"
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/$deps${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/device_check.log"
python3 benchmarks/device_check.py --out "$out" --budget-s "${BUDGET_S:-540}" "$@" 2>&1 | tee -a "$out/device_check.log"
