#!/usr/bin/env bash
# From a fresh clone to a running TorchServe that reads digits: setup, train, archive, serve, predict.
# Needs the MNIST files: set MNIST_DATA_DIR, or put them in data/mnist (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ -f checkpoints/mnist_sd.pt ]; then
    echo "quickstart: using checkpoints/mnist_sd.pt (mnist-kit train --force trains again)"
else
    mnist-kit train
fi
mnist-kit archive --force

# A server from an earlier quickstart would still serve the old archive.
mnist-kit stop >/dev/null
mnist-kit serve

predictions=$(mnist-kit predict --wait 30 examples/digits/*.png)
echo "$predictions"
wrong=$(echo "$predictions" | awk -F'[/.: ]+' '{ if ($3 != $5) print }')
if [ -n "$wrong" ]; then
    echo "quickstart: these sample digits were predicted wrong:" >&2
    echo "$wrong" >&2
    exit 1
fi
cat <<MSG

quickstart: all 10 sample digits read correctly. TorchServe is still running:
  curl http://127.0.0.1:8080/predictions/mnist -T examples/digits/7.png
  .venv/bin/mnist-kit predict path/to/digit.png
  .venv/bin/mnist-kit ui          # draw digits in your browser (or: mnist-kit pad, a desktop window)
Stop it with:
  .venv/bin/mnist-kit stop
MSG
