"""Every config.properties the kit writes, from one function, and what the kit reads back from one.

Three profiles: "local" (the repo root's config.properties: everything on loopback, no tokens), "production"
(config.production.properties: inference on every interface, tokens on) and "cluster" (the /mnt/models layout of
`mnist-kit export`, which KServe's TorchServe runtime and the kit's image start). What every profile shares (no
model API over HTTP, the body limit, Prometheus metrics with the handler's own) is written once, below.
"""

import json
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError

PROFILES = ("local", "production", "cluster")
ROOT_FILES = {"local": "config.properties", "production": "config.production.properties"}


class ConfigError(KitError):
    """A config.properties says something the kit cannot use; the message says what."""


def properties(
    profile: str = "local",
    *,
    inference_port: int = C.INFERENCE_PORT,
    management_port: int = C.MANAGEMENT_PORT,
    metrics_port: int = C.METRICS_PORT,
    grpc_ports: tuple[int, int] = C.GRPC_PORTS,
    model_store=C.MODEL_STORE,
    load_models: str = f"{C.MODEL_NAME}.mar",
    model_snapshot: dict | None = None,
    workers: int | None = None,
    initial_worker_port: int | None = None,
    certificate=None,
    private_key=None,
    extra: dict | None = None,
) -> str:
    """The text of a config.properties of `profile`. A certificate and its private key (PEM files) make the
    inference address HTTPS; "cluster" takes the model_snapshot and workers per model instead of load_models and
    ports; `extra` properties are added as they are."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {PROFILES}")
    cluster, production = profile == "cluster", profile == "production"
    if cluster:
        lines = _cluster(model_snapshot or {}, workers or 1)
    else:
        lines = _standalone(
            profile,
            https=bool(certificate),
            inference_port=inference_port,
            management_port=management_port,
            metrics_port=metrics_port,
            grpc_ports=grpc_ports,
            model_store=model_store,
            load_models=load_models,
        )
    lines += [
        "# No registering or deleting models over HTTP.",
        "enable_model_api=false",
        "# A digit photo is at most a few MB; larger bodies get 413 before they reach a worker.",
        f"max_request_size={C.MAX_REQUEST_BYTES}",
    ]
    if not cluster:
        lines += [
            "metrics_mode=prometheus",
            "# Publish the handler's own metrics (PredictionsPerDigit, RejectedInputs, ...) without a metrics.yaml.",
            "model_metrics_auto_detect=true",
            "# No cors_allowed_origin: no CORS headers, so web pages from other origins cannot call the API.",
        ]
    if production and not certificate:
        lines += [
            "# HTTPS: a certificate and its private key (PEM), and an https:// inference_address, e.g.",
            "#   inference_address=https://0.0.0.0:8443",
            "#   certificate_file=/etc/mnist-kit/tls.crt",
            "#   private_key_file=/etc/mnist-kit/tls.key",
            "# then: mnist-kit predict --url https://HOST:8443 --cacert CA.crt IMAGE",
        ]
    if certificate:
        lines += ["# HTTPS for inference (TorchServe's own TLS).", f"certificate_file={certificate}"]
        lines.append(f"private_key_file={private_key}")
    lines += [f"{key}={value}" for key, value in (extra or {}).items()]
    if initial_worker_port:
        lines.append(f"initial_worker_port={initial_worker_port}")
    return "\n".join(lines) + "\n"


def _standalone(
    profile: str,
    *,
    https: bool,
    inference_port: int,
    management_port: int,
    metrics_port: int,
    grpc_ports: tuple[int, int],
    model_store,
    load_models: str,
) -> list[str]:
    """The local and production profiles' own lines: where TorchServe listens, the models it loads, the tokens."""
    production = profile == "production"
    inference_host = "0.0.0.0" if production else C.HOST
    scheme = "https" if https else "http"
    name = ROOT_FILES[profile]
    lines = [
        f"# TorchServe configuration of mnist-kit ({'production profile' if production else 'loopback default'}),"
        " written by mnist_kit.serving.torchserve.config.properties().",
        f"# Start from the repo root: mnist-kit serve --ts-config {name}",
        f"#   (or: torchserve --start --ts-config {name} --ncs)",
        f"inference_address={scheme}://{inference_host}:{inference_port}",
        "# Management and metrics stay on loopback: nothing outside this machine may scale or unregister models.",
        f"management_address=http://{C.HOST}:{management_port}",
        f"metrics_address=http://{C.HOST}:{metrics_port}",
        "# gRPC listens too, on loopback; a second instance on one machine needs its own ports.",
        f"grpc_inference_port={grpc_ports[0]}",
        f"grpc_management_port={grpc_ports[1]}",
        f"model_store={model_store}",
        f"load_models={load_models}",
    ]
    if production:
        lines += [
            "# Every request needs 'Authorization: Bearer <key>', with the keys TorchServe writes to",
            "# key_file.json in the directory it was started from.",
            "disable_token_authorization=false",
        ]
    else:
        lines += [
            "# Loopback only, so requests need no token; config.production.properties turns tokens on.",
            "disable_token_authorization=true",
        ]
    return lines


def _cluster(model_snapshot: dict, workers: int) -> list[str]:
    """The cluster profile's own lines: what KServe's runtime (and the kit's image) start TorchServe with."""
    snapshot = json.dumps(model_snapshot, separators=(",", ":"))
    return [
        "# TorchServe configuration for the /mnt/models layout, written by `mnist-kit export`.",
        f"# Started as KServe's TorchServe runtime does: torchserve --start --model-store={C.DEPLOY_MODEL_STORE}",
        f"#   --ts-config={C.DEPLOY_CONFIG}   (the kit's image adds --foreground)",
        "# Inference on every interface of the pod: the ingress, or a Service naming this port only, reaches it.",
        f"inference_address=http://{C.POD_HOST}:{C.INFERENCE_PORT}",
        "# Management stays on the pod's loopback: nothing outside may scale or unregister models.",
        f"management_address=http://{C.HOST}:{C.MANAGEMENT_PORT}",
        "# Metrics for Prometheus, scraped on the pod's address (KServe's runtime: prometheus.kserve.io/port).",
        f"metrics_address=http://{C.POD_HOST}:{C.METRICS_PORT}",
        "metrics_mode=prometheus",
        "model_metrics_auto_detect=true",
        "# gRPC on loopback only: no Service or ingress names it.",
        f"grpc_inference_address={C.HOST}",
        f"grpc_management_address={C.HOST}",
        f"grpc_inference_port={C.GRPC_PORTS[0]}",
        f"grpc_management_port={C.GRPC_PORTS[1]}",
        f"model_store={C.DEPLOY_MODEL_STORE}",
        "# One worker per requested CPU, each on one thread (the handler sets it): the pod's cores, no more.",
        f"default_workers_per_model={workers}",
        f"model_snapshot={snapshot}",
        "# No enable_envvars_config and no service_envelope: TorchServe then ignores the TS_SERVICE_ENVELOPE that",
        "# KServe's runtime sets, and the handler answers KServe v1 and the Open Inference Protocol v2 itself,",
        "# batched (TorchServe 0.12's envelopes keep only the first request of a batch).",
        "# Clients of KServe send no TorchServe token: authentication belongs to the ingress.",
        "disable_token_authorization=true",
    ]


def read(path) -> dict:
    """The properties of a config.properties file (comments left out)."""
    text = Path(path).read_text()
    return dict(line.split("=", 1) for line in map(str.strip, text.splitlines()) if "=" in line and line[0] != "#")


def max_request_size(config_path) -> tuple[int, str]:
    """The largest body the server config_path configures accepts, and where that figure comes from: its
    max_request_size, else TorchServe's own default; without the file, the kit's (every config it writes sets it)."""
    path = Path(config_path)
    if not path.is_file():
        return C.MAX_REQUEST_BYTES, f"the kit's default; no {path}"
    value = read(path).get("max_request_size")
    if value is None:
        return C.TS_MAX_REQUEST_BYTES, f"TorchServe's default; {path} sets none"
    try:
        return int(value), str(path)
    except ValueError:
        raise ConfigError(f"max_request_size={value} in {path} is not a number of bytes") from None
