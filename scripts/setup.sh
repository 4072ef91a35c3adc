#!/usr/bin/env bash
# Create .venv (once) and install nnunet-transfer (editable) with its test extra. Re-runs are instant unless
# pyproject.toml or constraints.txt changed. Prints one line per step; pip's own output goes to .venv/setup.log,
# whose last lines are printed (naming the file) when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.nnunet_transfer_installed
log=.venv/setup.log
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

# run a pip step with its output in $log; on failure show why and stop
pip_step() {
    local what=$1
    shift
    echo "[setup] $what"
    echo "### $what: pip $*" >> "$log"
    if ! .venv/bin/python -m pip "$@" >> "$log" 2>&1; then
        echo "[setup] FAILED: $what. The last lines of $PWD/$log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    : > "$log"
    start=$SECONDS
    pip_step "upgrading pip" install --upgrade pip
    pip_step "installing nnunet-transfer, nnU-Net and PyTorch into .venv (first time: a few minutes, ~3 GB)" \
        install --progress-bar off -c constraints.txt -e ".[test]"
    # pip exits 0 on some problems it reports (e.g. "ERROR: pip's dependency resolver ..."): show those lines
    grep '^ERROR' "$log" | sed 's/^/[setup] pip: /' >&2 || true
    count=$(grep '^Successfully installed' "$log" | tail -n 1 | wc -w)
    echo "[setup] installed $((count > 2 ? count - 2 : 0)) packages in $((SECONDS - start)) s (pip's output: $log)"
    echo "$want" > "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import nnunet_transfer, nnunetv2, torch; print("nnunet-transfer", nnunet_transfer.__version__, "| torch", torch.__version__)')"
