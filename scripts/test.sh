#!/usr/bin/env bash
# Setup, then the whole test suite (unit tests and integration tests against a real TorchServe).
# Needs the MNIST files: set MNIST_DATA_DIR, or put them in data/mnist. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
