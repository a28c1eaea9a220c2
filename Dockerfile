# mnist-kit's CPU serving image: TorchServe 0.12 on Python 3.11 and Java 17, CPU-only PyTorch, user 1000.
# It serves the /mnt/models layout that `mnist-kit export kserve|k8s` writes, started the way KServe's
# TorchServe runtime starts it:
#   torchserve --start --model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties
# (the entrypoint adds --foreground). The .mar is self-contained: the image needs no mnist-kit, only what a
# TorchServe worker imports (torch, ONNX Runtime, PIL, numpy, PyYAML, Captum).
#
#   podman build -t mnist-kit-serving:0.1.0 .                  # runtime: the layout is mounted at /mnt/models
#                                                               # (KServe's storage initializer, compose.yaml)
#   mnist-kit export k8s deploy/k8s
#   podman build --target model --build-arg LAYOUT=deploy/k8s -t mnist-kit-serving:0.1.0-model .
#                                                               # the layout baked in (plain Kubernetes)

FROM docker.io/library/python:3.11-slim-bookworm AS runtime

# Java 17 for TorchServe's frontend; tini as PID 1, so a stop signal reaches TorchServe and its workers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
    && rm -rf /var/lib/apt/lists/*

# The project's torch range (pyproject.toml), with PyTorch's CPU-only wheels from PyTorch's own index: no CUDA
# libraries (gigabytes) in a CPU image. Then TorchServe and what its worker imports, from PyPI; the
# installed torch already satisfies Captum's requirement, so it stays the CPU build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.14.1,<2.16" \
    && pip install --no-cache-dir torchserve==0.12.0 pyyaml captum pillow numpy psutil onnxruntime

# KServe's runtime runs the container as user 1000; so does this image, with a home for TorchServe's logs.
RUN useradd --uid 1000 --create-home --home-dir /home/model-server model-server \
    && mkdir -p /mnt/models/model-store /mnt/models/config
# The entrypoint (standard library only): a stop signal drains MNIST_KIT_DRAIN_SECONDS (readiness 503 on 8083, requests
# served as usual), then stops TorchServe; see mnist_kit/deploy/entrypoint.py.
COPY --chmod=755 mnist_kit/deploy/entrypoint.py /usr/local/bin/mnist-kit-entrypoint
WORKDIR /home/model-server
ENV PYTHONUNBUFFERED=1 \
    LOG_LOCATION=/home/model-server/logs \
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

# The kserve runtime (`mnist-kit serve --runtime kserve`): KServe's ModelServer with the kit, no Java and no torch
# (ONNX Runtime serves the archive's ONNX forms). It serves the same /mnt/models layout, REST on 8080 and gRPC v2 on
# 8081, as `mnist-kit export kserve|k8s --runtime kserve` runs it:
#   podman build --target kserve -t mnist-kit-serving:0.1.0-kserve .
FROM docker.io/library/python:3.11-slim-bookworm AS kserve
COPY pyproject.toml README.md mnist_model.py mnist_handler.py /tmp/mnist-kit/
COPY mnist_kit/ /tmp/mnist-kit/mnist_kit/
RUN pip install --no-cache-dir "/tmp/mnist-kit[kserve]" && rm -rf /tmp/mnist-kit \
    && useradd --uid 1000 --create-home --home-dir /home/model-server model-server \
    && mkdir -p /mnt/models/model-store
WORKDIR /home/model-server
# A stop signal drains 10 s (readiness 503, requests served as usual) before the graceful stop.
ENV PYTHONUNBUFFERED=1 \
    MNIST_KIT_DRAIN_SECONDS=10
USER 1000
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
CMD ["python", "-m", "mnist_kit.serving.kserve_server", "--archive=/mnt/models/model-store/mnist.mar", "--host=0.0.0.0", "--http-port=8080", "--grpc-port=8081"]

# The kserve runtime with a layout's model store baked in, for plain Kubernetes (`export k8s --runtime kserve`).
FROM kserve AS kserve-model
ARG LAYOUT=deploy/k8s
COPY ${LAYOUT}/model-store/ /mnt/models/model-store/

# The last stage is what a plain `podman build .` makes: the runtime alone.
FROM runtime
