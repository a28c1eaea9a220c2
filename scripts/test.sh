#!/usr/bin/env bash
# Setup, lint (ruff check and format check), then the test suite: every tier unless told otherwise.
# Extra arguments go to pytest: `scripts/test.sh -m unit` is the quick loop (no Java, no training).
# Needs the MNIST files: set MNIST_DATA_DIR, or put them in data/mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest "$@"
