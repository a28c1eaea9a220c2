"""Deploying beyond one machine: the KServe model storage layout, plain Kubernetes manifests, their resources.

Both exports write the layout KServe's TorchServe runtime mounts at /mnt/models (config/config.properties and
model-store/*.mar), which the kit's image (Dockerfile) serves the runtime's way:
`torchserve --start --model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties`.
`kserve` adds inferenceservice.yaml; `k8s` adds kubernetes.yaml (ConfigMap, Deployment, Service, autoscaler,
disruption budget). Pod resources come from what `mnist-kit bench` measured, and say so.
"""

import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

import yaml

from mnist_kit import constants as C
from mnist_kit.errors import KitError


class DeployError(KitError):
    """The export cannot be written; the message says why."""


@dataclass(frozen=True)
class Archive:
    """One .mar of the model store, with the settings its model-config.yaml gives TorchServe."""

    path: Path
    model_name: str
    version: str
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int


@dataclass(frozen=True)
class Resources:
    """What one pod asks for (and is limited to: requests equal limits, Kubernetes' Guaranteed class), one
    TorchServe worker per core, and where the figures come from."""

    cpus: int
    memory_mib: int
    scale_target: int
    source: str

    def kubernetes(self) -> dict:
        amounts = {"cpu": str(self.cpus), "memory": f"{self.memory_mib}Mi"}
        return {"requests": dict(amounts), "limits": dict(amounts)}


def default_image(tag_suffix: str = "") -> str:
    """The kit's serving image, tagged with the kit's version: `mnist-kit-serving:0.1.0` (runtime only) or
    `mnist-kit-serving:0.1.0-model` (the model store and config baked in; Dockerfile target `model`)."""
    return f"{C.IMAGE_NAME}:{installed_version('mnist-kit')}{tag_suffix}"


def read_archives(model_store) -> list[Archive]:
    """Every .mar in the model store, with its name, version and batching settings; refuses an empty store."""
    model_store = Path(model_store)
    paths = sorted(model_store.glob("*.mar")) if model_store.is_dir() else []
    if not paths:
        raise DeployError(
            f"{model_store}/ has no .mar archives: train and archive first (mnist-kit train && mnist-kit archive)"
        )
    return [_read_archive(path) for path in paths]


def _read_archive(path: Path) -> Archive:
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
            config = yaml.safe_load(z.read("model-config.yaml")) if "model-config.yaml" in z.namelist() else {}
        return Archive(
            path=path,
            model_name=manifest["modelName"],
            version=manifest["modelVersion"],
            batch_size=int(config.get("batchSize", 1)),
            max_batch_delay_ms=int(config.get("maxBatchDelay", 100)),
            response_timeout_s=int(config.get("responseTimeout", 120)),
        )
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, yaml.YAMLError) as e:
        raise DeployError(f"{path} is not a TorchServe archive of mnist-kit archive ({e})") from None


def resources(bench_report=None, cpus=None, memory_mib=None, scale_target=None) -> Resources:
    """Pod resources from a `mnist-kit bench` report: as many cores as the bench's workers (one per core, each
    on one thread) and its measured server memory with headroom; the autoscaling target is the smallest
    concurrency that reached most of the best throughput. Without a report, KServe's runtime defaults.
    Explicit values win over both."""
    bench = None
    if bench_report is not None and Path(bench_report).is_file():
        try:
            bench = json.loads(Path(bench_report).read_text())
            measured_cpus = int(bench["settings"]["workers"])
            sweep = bench["kit"]["sweep"]
            best = max(point["req_per_s"] for point in sweep)
            target = min(p["concurrency"] for p in sweep if p["req_per_s"] >= C.SCALE_THROUGHPUT_SHARE * best)
            memory = float(bench["kit"].get("memory_mib") or 0)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{bench_report} is not a report of mnist-kit bench ({e})") from None
    if bench is None:
        source = (
            f"no bench report ({bench_report or 'none given'}): KServe's TorchServe runtime defaults, "
            f"{C.DEFAULT_CPUS} CPU and {C.DEFAULT_MEMORY_MIB}Mi"
        )
        derived = Resources(C.DEFAULT_CPUS, C.DEFAULT_MEMORY_MIB, C.DEFAULT_SCALE_TARGET, source)
    else:
        derived_memory = _round_up(memory * C.MEMORY_HEADROOM, C.MEMORY_STEP_MIB) if memory else C.DEFAULT_MEMORY_MIB
        memory_note = (
            f"server memory {memory:.0f} MiB measured × {C.MEMORY_HEADROOM}"
            if memory
            else f"no memory in the report (an older bench): {C.DEFAULT_MEMORY_MIB}Mi"
        )
        machine = bench.get("machine", {})
        source = (
            f"{bench_report}: {measured_cpus} workers on {machine.get('cpus', '?')} cores of "
            f"{machine.get('cpu', 'an unnamed CPU')} served {best:.0f} req/s at best; {memory_note}; "
            f"autoscaling at {target} concurrent requests ({C.SCALE_THROUGHPUT_SHARE:.0%} of the best throughput)"
        )
        derived = Resources(measured_cpus, derived_memory, target, source)
    overrides = {
        name: value
        for name, value in (("cpus", cpus), ("memory_mib", memory_mib), ("scale_target", scale_target))
        if value is not None
    }
    if not overrides:
        return derived
    given = ", ".join(f"{name} {value}" for name, value in overrides.items())
    return Resources(**{**derived.__dict__, **overrides, "source": f"given: {given}; the rest from {derived.source}"})


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def model_snapshot(archives: list[Archive], workers: int) -> dict:
    """TorchServe's `model_snapshot`: every archive with its batching settings and `workers` workers. A model's
    default version (what /predictions/NAME and /v2/models/NAME answer) is NAME.mar, the one `mnist-kit archive`
    writes without --version, else its first; `mnist-kit models set-default` changes it live."""
    models: dict[str, dict] = {}
    for archive in archives:
        models.setdefault(archive.model_name, {})[archive.version] = {
            "defaultVersion": False,
            "marName": archive.path.name,
            "minWorkers": workers,
            "maxWorkers": workers,
            "batchSize": archive.batch_size,
            "maxBatchDelay": archive.max_batch_delay_ms,
            "responseTimeout": archive.response_timeout_s,
        }
    for name, versions in models.items():
        plain = [v for v in versions.values() if v["marName"] == f"{name}.mar"]
        (plain or list(versions.values()))[0]["defaultVersion"] = True
    return {"name": "startup.cfg", "modelCount": len(archives), "models": models}


def serving_config(archives: list[Archive], workers: int) -> str:
    """The config.properties of the layout: what KServe's runtime (and the kit's image) start TorchServe with."""
    snapshot = json.dumps(model_snapshot(archives, workers), separators=(",", ":"))
    lines = [
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
        "# No registering or deleting models over HTTP.",
        "enable_model_api=false",
        "# A digit photo is at most a few MB; larger bodies get 413 before they reach a worker.",
        f"max_request_size={C.MAX_REQUEST_BYTES}",
    ]
    return "\n".join(lines) + "\n"


def inference_service(
    name: str,
    storage_uri: str,
    serving_image: str,
    pod: Resources,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    scale_metric: str = C.SCALE_METRICS[0],
) -> dict:
    """The InferenceService: KServe's TorchServe runtime (modelFormat pytorch) speaking the Open Inference
    Protocol, with the kit's image in place of the runtime's stock one (which puts a Python proxy on 8080)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mnist-kit"},
        },
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "scaleMetric": scale_metric,
                "scaleTarget": pod.scale_target,
                "model": {
                    "modelFormat": {"name": "pytorch"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "image": serving_image,
                    "resources": pod.kubernetes(),
                },
            }
        },
    }


def kubernetes_manifests(
    name: str,
    config_text: str,
    serving_image: str,
    pod: Resources,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
) -> list[dict]:
    """ConfigMap, Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget, in the order
    `kubectl apply -f` creates them. The image carries the model store (Dockerfile target `model`); the
    ConfigMap's config.properties is mounted over the image's, so operators tune it without a rebuild."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mnist-kit"}
    metadata = {"name": name, "labels": labels}
    ping = {"httpGet": {"path": "/ping", "port": "http"}}
    container = {
        "name": "torchserve",
        "image": serving_image,
        "args": [
            "torchserve",
            "--start",
            "--foreground",
            f"--model-store={C.DEPLOY_MODEL_STORE}",
            f"--ts-config={C.DEPLOY_CONFIG}",
        ],
        "ports": [
            {"name": "http", "containerPort": C.INFERENCE_PORT},
            {"name": "metrics", "containerPort": C.METRICS_PORT},
        ],
        "resources": pod.kubernetes(),
        # Workers load in seconds; give a slow node a minute before liveness may restart the pod.
        "startupProbe": {**ping, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**ping, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**ping, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": C.SERVING_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": str(Path(C.DEPLOY_CONFIG).parent), "readOnly": True}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "labels": labels},
            "data": {Path(C.DEPLOY_CONFIG).name: config_text},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            # No `replicas`: the autoscaler owns it, and a re-apply would reset it.
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(C.METRICS_PORT),
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": {
                        # Kubernetes' "restricted" Pod Security Standard; TorchServe never calls the API server.
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": C.SERVING_USER,
                            "fsGroup": C.SERVING_USER,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "selector": labels,
                # Inference only: management (8081) listens on the pod's loopback, metrics are scraped per pod.
                "ports": [{"name": "http", "port": C.INFERENCE_PORT, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": C.HPA_CPU_PERCENT},
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata,
            # maxUnavailable, not minAvailable: with one replica a drain still proceeds.
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
    ]


def dump_yaml(documents: list[dict]) -> str:
    """YAML as people write it: keys in the order given, block style, multi-line strings as literal blocks."""

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    def string(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, string)
    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)


@dataclass(frozen=True)
class Export:
    """What an export wrote (paths relative to out), the pods' resources and the image it names."""

    out: Path
    files: list[str]
    resources: Resources
    image: str


def export_kserve(
    out,
    storage_uri: str,
    model_store=C.MODEL_STORE,
    bench_report=C.BENCH_REPORT,
    name: str = C.MODEL_NAME,
    image: str | None = None,
    cpus: int | None = None,
    memory_mib: int | None = None,
    scale_target: int | None = None,
    scale_metric: str = C.SCALE_METRICS[0],
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    force: bool = False,
) -> Export:
    """OUT/config/config.properties, OUT/model-store/*.mar (copies) and OUT/inferenceservice.yaml; upload
    config/ and model-store/ to `storage_uri`, apply the yaml."""
    _check_replicas(min_replicas, max_replicas, lowest=0)
    archives = read_archives(model_store)
    pod = resources(bench_report, cpus, memory_mib, scale_target)
    image = image or default_image()
    isvc = inference_service(name, storage_uri, image, pod, min_replicas, max_replicas, scale_metric)
    files = _write(
        out, archives, serving_config(archives, pod.cpus), {"inferenceservice.yaml": dump_yaml([isvc])}, force
    )
    return Export(Path(out), files, pod, image)


def export_k8s(
    out,
    model_store=C.MODEL_STORE,
    bench_report=C.BENCH_REPORT,
    name: str = C.MODEL_NAME,
    image: str | None = None,
    cpus: int | None = None,
    memory_mib: int | None = None,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    force: bool = False,
) -> Export:
    """OUT/kubernetes.yaml, and the same layout as export_kserve (config/, model-store/) for building the image
    with the model baked in (Dockerfile target `model`) or mounting it (compose.yaml)."""
    _check_replicas(min_replicas, max_replicas, lowest=1)
    archives = read_archives(model_store)
    pod = resources(bench_report, cpus, memory_mib)
    image = image or default_image("-model")
    config = serving_config(archives, pod.cpus)
    manifests = kubernetes_manifests(name, config, image, pod, min_replicas, max_replicas)
    files = _write(out, archives, config, {"kubernetes.yaml": dump_yaml(manifests)}, force)
    return Export(Path(out), files, pod, image)


def image_layout(out, context) -> str | None:
    """OUT as the Dockerfile's LAYOUT (`--target model`): its path relative to the build context, or None when it
    lies outside the context's deploy/, which .dockerignore keeps the only export folder the build can see."""
    out, context = Path(out).resolve(), Path(context).resolve()
    if not out.is_relative_to(context / C.DEPLOY_DIR):
        return None
    return out.relative_to(context).as_posix()


def _check_replicas(min_replicas: int, max_replicas: int, lowest: int) -> None:
    """KServe (Knative) can scale to zero; a HorizontalPodAutoscaler keeps at least one pod."""
    if not lowest <= min_replicas <= max_replicas or max_replicas < 1:
        raise DeployError(
            f"replicas: need {lowest} <= min ({min_replicas}) <= max ({max_replicas}), and max at least 1"
        )


def _write(out, archives: list[Archive], config: str, extra: dict[str, str], force: bool) -> list[str]:
    """Write the whole export beside OUT, then rename it into place: OUT is never half-written, and an
    existing OUT is replaced only with force."""
    out = Path(out)
    if out.exists() and not force:
        raise DeployError(f"{out} already exists: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        (staging / "config").mkdir()
        (staging / "config" / "config.properties").write_text(config)
        (staging / "model-store").mkdir()
        for archive in archives:
            shutil.copy2(archive.path, staging / "model-store" / archive.path.name)
        for filename, text in extra.items():
            (staging / filename).write_text(text)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        os.chmod(staging, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-old-"))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files
