#!/usr/bin/env bash
# Idempotent: creates .venv, installs the kit with every extra (train, torchserve, kserve, dev, desktop), checks Java,
# and the system packages the tests need (wrk, haproxy, chromium, Qt's libraries) when it can.
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

# The rollout tests and scripts/rollout.py: Debian's HAProxy, in front of the replicas (nothing starts it as a service
# for the kit: the kit runs its own, on its own ports).
if ! command -v haproxy >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing haproxy (the proxy of the rollout tests)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy) >/dev/null 2>&1 \
            || echo "setup: warning: could not install haproxy; the rollout tests need it" >&2
    else
        echo "setup: warning: haproxy not found; the rollout tests need it (Debian: sudo apt-get install haproxy)" >&2
    fi
fi

# The monitoring tests and `mnist-kit export monitoring`'s files: Debian's prometheus (it brings promtool) and
# prometheus-alertmanager (amtool). The tests run the tools, never the services: the install starts neither (a
# policy-rc.d of the kit's, while apt runs, where the system has none) and, under systemd, leaves them disabled.
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing prometheus and prometheus-alertmanager (promtool and amtool, for the monitoring tests)"
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            trap 'rm -f "$policy"' EXIT
            printf '#!/bin/sh\n# mnist-kit setup: no service starts while it installs packages\nexit 101\n' >"$policy"
            chmod 755 "$policy"
        fi
        if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            prometheus prometheus-alertmanager) >/dev/null 2>&1; then
            if [ -d /run/systemd/system ]; then
                systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
            fi
        else
            echo "setup: warning: could not install prometheus and prometheus-alertmanager; the monitoring tests need them" >&2
        fi
        if grep -q "mnist-kit setup" "$policy" 2>/dev/null; then
            rm -f "$policy"
            trap - EXIT
        fi
    else
        echo "setup: warning: promtool or amtool not found; the monitoring tests need them" \
            "(Debian, as root: apt-get install prometheus prometheus-alertmanager)" >&2
    fi
fi

# The container tests and `mnist-kit image build`: podman with runc, and debootstrap to make a Debian base image where
# no registry answers. Where the host's cgroups are hybrid, podman's default runtime (crun) cannot start containers,
# and its default ulimits can exceed the host's: a drop-in of the kit's picks runc and the host's own limits.
container_packages=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || container_packages+=("$tool")
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ ${#container_packages[@]} -gt 0 ]; then
        echo "setup: installing ${container_packages[*]} (the container engine of the image tests)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${container_packages[@]}") \
            >/dev/null 2>&1 || echo "setup: warning: could not install ${container_packages[*]}; the image tests need them" >&2
    fi
    podman_conf=/etc/containers/containers.conf.d/50-mnist-kit.conf
    if command -v podman >/dev/null 2>&1 && [ ! -f "$podman_conf" ]; then
        echo "setup: writing $podman_conf (podman: runc, the host's ulimits)"
        mkdir -p "$(dirname "$podman_conf")"
        printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$podman_conf"
    fi
elif [ ${#container_packages[@]} -gt 0 ]; then
    echo "setup: warning: missing ${container_packages[*]}: the image tests and mnist-kit image build need them" \
        "(Debian, as root: apt-get install ${container_packages[*]})" >&2
fi

# The UI tests: Debian's chromium (driven by Playwright; its own browser download cannot work here) and the
# libraries Qt loads even offscreen (PyQt5 ships Qt itself, not these).
qt_libs="libgl1:libGL.so.1 libegl1:libEGL.so.1 libxkbcommon0:libxkbcommon.so.0 libfontconfig1:libfontconfig.so.1 libdbus-1-3:libdbus-1.so.3"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
for entry in $qt_libs; do
    [[ $libs == *"${entry#*:}"* ]] || missing+=("${entry%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]} (browser and Qt libraries for mnist-kit ui/pad and their tests)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
            || echo "setup: warning: could not install ${missing[*]}; the ui and pad tests need them" >&2
    else
        echo "setup: warning: missing ${missing[*]} (Debian packages): the ui and pad tests need them;" \
            "install them as root: apt-get install ${missing[*]}" >&2
    fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# PyTorch's CPU wheels where PyTorch's own index answers (a CPU service needs no CUDA libraries: gigabytes); else
# PyPI's default wheels, which on Linux bring CUDA's. pip takes the CPU build (2.x.y+cpu) over PyPI's of the same
# release. Everything else comes from PyPI.
cpu_index=https://download.pytorch.org/whl/cpu
stamp=.venv/.mnist-kit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    index_args=()
    if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=5)" \
        "$cpu_index" >/dev/null 2>&1; then
        index_args=(--extra-index-url "$cpu_index")
    fi
    echo "setup: installing mnist-kit and its dependencies into .venv (minutes; log in .venv/install.log)"
    if ! .venv/bin/python -m pip install "${index_args[@]}" -e ".[train,torchserve,kserve,dev,desktop]" \
        >.venv/install.log 2>&1; then
        tail -n 30 .venv/install.log >&2
        echo "error: pip install failed; the whole log is in .venv/install.log" >&2
        exit 1
    fi
    if [ ${#index_args[@]} -gt 0 ]; then
        which="PyTorch's CPU wheels"
    else
        which="PyPI's default torch wheels (PyTorch's CPU index did not answer; on Linux they bring CUDA's libraries)"
    fi
    echo "setup: installed $which; .venv holds $(du -sh .venv | cut -f1)"
    touch "$stamp"
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import onnxruntime, torch, ts; print("torch", torch.__version__, "/ ONNX Runtime", onnxruntime.__version__, "/ torchserve", ts.__version__)'))"
