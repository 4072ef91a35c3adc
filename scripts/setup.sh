#!/usr/bin/env bash
# Create .venv (once) and install nnunet-transfer (editable) with its test extra. Re-runs are instant unless
# pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.nnunet_transfer_installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[setup] installing nnunet-transfer, nnU-Net and PyTorch into .venv (first time: a few minutes, ~3 GB)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import nnunet_transfer, nnunetv2, torch; print("nnunet-transfer", nnunet_transfer.__version__, "| torch", torch.__version__)')"
