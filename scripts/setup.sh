#!/usr/bin/env bash
# Idempotent: creates .venv, installs the kit with its dev extras, checks Java.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null 2>&1; then
    echo "error: Java 17 or newer is required by TorchServe and 'java' is not on PATH (Debian: apt-get install openjdk-17-jre-headless)." >&2
    exit 1
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
    echo "error: TorchServe needs Java 17 or newer; found: $(java -version 2>&1 | head -n 1)" >&2
    exit 1
fi

# wrk is the load generator of `mnist-kit bench` (a C program; Debian package wrk).
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing wrk (load generator for mnist-kit bench)"
        (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || echo "setup: warning: could not install wrk; mnist-kit bench needs it" >&2
    else
        echo "setup: warning: wrk not found; mnist-kit bench needs it (Debian/Ubuntu: sudo apt-get install wrk)" >&2
    fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.mnist-kit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing mnist-kit and its dependencies into .venv (about a minute; log in .venv/install.log)"
    if ! .venv/bin/python -m pip install -e ".[dev]" >.venv/install.log 2>&1; then
        tail -n 30 .venv/install.log >&2
        echo "error: pip install failed; the whole log is in .venv/install.log" >&2
        exit 1
    fi
    touch "$stamp"
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, ts; print("torch", torch.__version__, "/ torchserve", ts.__version__)'))"
