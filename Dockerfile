# mnist-kit's CPU serving images, user 1000. `mnist-kit image build` builds them all (with podman or docker), tagged
# localhost/mnist-kit:TARGET; by hand:
#   podman build --target runtime -t localhost/mnist-kit:runtime .   # TorchServe; the layout mounted at /mnt/models
#                                                                     # (KServe's storage initializer, compose.yaml)
#   mnist-kit export k8s deploy/k8s
#   podman build --target model --build-arg LAYOUT=deploy/k8s -t localhost/mnist-kit:model .   # the layout baked in
#   podman build --target kserve -t localhost/mnist-kit:kserve .     # KServe's ModelServer: no Java, no torch
#   podman build --target kserve-model --build-arg LAYOUT=deploy/k8s -t localhost/mnist-kit:kserve-model .
#
# BASE is any Debian 12 image: the official Python one by default; where no registry answers, `mnist-kit image build`
# makes a plain Debian with debootstrap and passes it (--build-arg BASE=localhost/mnist-kit-base:bookworm).
# pip reads PyPI, and PyTorch's CPU index for torch where it answers. Where the index's certificates chain to an
# authority only the build host trusts, pass the host's bundle as a build secret: it is read during the install
# steps and stored in no layer (`podman build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt ...`).
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# Python in a venv of its own, /opt/venv, on either base: the base's python3 where it has one with ensurepip (the
# official image), else Debian's; tini, the PID 1 of both runtimes. apt's lists and caches stay out of the layers.
FROM ${BASE} AS python
RUN packages="tini"; \
    if ! python3 -c "import ensurepip" 2>/dev/null; then packages="$packages python3 python3-venv ca-certificates"; fi; \
    apt-get update && apt-get install -y --no-install-recommends $packages \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && python3 -m venv /opt/venv \
    && useradd --uid 1000 --create-home --home-dir /home/model-server model-server \
    && mkdir -p /mnt/models/model-store /mnt/models/config
# ORT_DISABLE_TELEMETRY: ONNX Runtime collects no telemetry in a serving image (and so writes no device ID).
ENV PATH=/opt/venv/bin:$PATH \
    ORT_DISABLE_TELEMETRY=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# TorchServe 0.12 and Java 17 for its frontend; tini as PID 1, so a stop signal reaches TorchServe and its workers.
# It serves the /mnt/models layout that `mnist-kit export kserve|k8s` writes, started the way KServe's TorchServe
# runtime starts it (the entrypoint adds --foreground). The .mar is self-contained: the image needs no mnist-kit,
# only what a TorchServe worker imports (torch, ONNX Runtime, PIL, numpy, PyYAML, Captum).
FROM python AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# The project's torch range (pyproject.toml) from PyTorch's CPU index (no CUDA libraries, gigabytes, in a CPU image);
# where that index does not answer, PyPI's default wheels, which bring CUDA's. Then TorchServe and what its worker
# imports, from PyPI; the installed torch satisfies Captum's requirement, so it stays as it is.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    { pip install --index-url "$TORCH_INDEX" "torch>=2.14.1,<2.16" \
      || { echo "PyTorch's CPU index did not answer: PyPI's default torch, with CUDA's libraries" \
           && pip install "torch>=2.14.1,<2.16"; }; } \
    && pip install torchserve==0.12.0 pyyaml captum pillow numpy psutil onnxruntime
# The entrypoint (standard library only): a stop signal drains MNIST_KIT_DRAIN_SECONDS (readiness 503 on 8083, requests
# served as usual), then stops TorchServe; see mnist_kit/deploy/entrypoint.py.
COPY --chmod=755 mnist_kit/deploy/entrypoint.py /usr/local/bin/mnist-kit-entrypoint
WORKDIR /home/model-server
ENV LOG_LOCATION=/home/model-server/logs \
    METRICS_LOCATION=/home/model-server/logs \
    MNIST_KIT_DRAIN_SECONDS=10 \
    MNIST_KIT_HEALTH_PORT=8083
USER 1000
# Inference (8080), Prometheus metrics (8082) and readiness (8083, the entrypoint's); management (8081) listens on
# the container's loopback only.
EXPOSE 8080 8082 8083
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/mnist-kit-entrypoint"]
CMD ["torchserve", "--start", "--foreground", "--model-store=/mnt/models/model-store", "--ts-config=/mnt/models/config/config.properties"]

# The layout of `mnist-kit export` baked in, for clusters without KServe (the Deployment of `export k8s`
# mounts its ConfigMap over config/). LAYOUT must lie under deploy/, the only export folder .dockerignore lets in.
FROM runtime AS model
ARG LAYOUT=deploy/k8s
COPY ${LAYOUT}/model-store/ /mnt/models/model-store/
COPY ${LAYOUT}/config/ /mnt/models/config/

# The kserve runtime (`mnist-kit serve --runtime kserve`): KServe's ModelServer with the kit and its kserve extra
# alone, no Java and no torch (ONNX Runtime serves the archive's ONNX forms). It serves the same /mnt/models layout,
# REST on 8080 and gRPC v2 on 8081, as `mnist-kit export kserve|k8s --runtime kserve` runs it. It writes only under
# /tmp (the unpacked archive): it runs with a read-only root filesystem and a tmpfs there.
FROM python AS kserve
COPY pyproject.toml README.md mnist_model.py mnist_handler.py /tmp/mnist-kit/
COPY mnist_kit/ /tmp/mnist-kit/mnist_kit/
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    pip install "/tmp/mnist-kit[kserve]" && rm -rf /tmp/mnist-kit
WORKDIR /home/model-server
# A stop signal drains 10 s (readiness 503, requests served as usual) before the graceful stop.
ENV MNIST_KIT_DRAIN_SECONDS=10
USER 1000
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
# tini without -g: the server hands a stop signal on to its workers itself, once (a second one skips the drain).
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "mnist_kit.serving.kserve.server", "--archive=/mnt/models/model-store/mnist.mar", "--host=0.0.0.0", "--http-port=8080", "--grpc-port=8081"]

# The kserve runtime with a layout's model store baked in, for plain Kubernetes (`export k8s --runtime kserve`).
FROM kserve AS kserve-model
ARG LAYOUT=deploy/k8s
COPY ${LAYOUT}/model-store/ /mnt/models/model-store/

# The last stage is what a plain `podman build .` makes: the runtime alone.
FROM runtime
