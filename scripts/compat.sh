#!/usr/bin/env bash
# The unit and integration tiers on the newest torch that pyproject.toml allows, in a venv of their own
# (.venv-compat), beside .venv's: what `pip install mnist-kit` gets today. Extra arguments go to pytest.
# Needs the MNIST files: set MNIST_DATA_DIR, or put them in data/mnist. Where pip is capped below the newest torch
# (a constraints file), lift the cap for this command: PIP_CONFIG_FILE=/dev/null scripts/compat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-compat
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
echo "compat: installing mnist-kit with the newest torch it allows into $venv (log in $venv/install.log)"
if ! "$venv/bin/python" -m pip install --upgrade -e ".[train,torchserve,kserve,dev,desktop]" >"$venv/install.log" 2>&1; then
    tail -n 30 "$venv/install.log" >&2
    echo "error: pip install failed; the whole log is in $venv/install.log" >&2
    exit 1
fi
"$venv/bin/python" -c 'import onnxruntime, torch; print(f"compat: torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}")'
exec "$venv/bin/python" -m pytest -m "unit or integration" "$@"
