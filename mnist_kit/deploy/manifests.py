"""The documents a cluster applies: KServe's InferenceService, or plain Kubernetes (ConfigMap, Deployment, Service,
autoscaler, disruption budget), for either runtime, and YAML as people write it.

The torchserve runtime is TorchServe in the kit's image, started as KServe's TorchServe runtime starts it. The
kserve runtime is the kit's kserve image (no Java): `python -m mnist_kit.serving.kserve.server` serving REST (http1)
and gRPC v2 (h2c) from the same /mnt/models layout, as a custom predictor container independent of KServe's
ClusterServingRuntimes; with two ports its InferenceService runs as a RawDeployment (Knative takes one port).
"""

from pathlib import Path

import yaml

from mnist_kit import constants as C
from mnist_kit.deploy.resources import Resources


def inference_service(
    name: str,
    storage_uri: str,
    serving_image: str,
    *,
    pod: Resources,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    scale_metric: str = C.SCALE_METRICS[0],
    runtime: str = "torchserve",
    archive_name: str = f"{C.MODEL_NAME}.mar",
) -> dict:
    """The InferenceService: KServe's TorchServe runtime (modelFormat pytorch) speaking the Open Inference
    Protocol, with the kit's image in place of the runtime's stock one (which puts a Python proxy on 8080); or,
    for the kserve runtime, the kit's kserve container, which KServe's storage initializer fills from
    STORAGE_URI as it fills a model's."""
    predictor = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "scaleMetric": scale_metric,
        "scaleTarget": pod.scale_target,
    }
    metadata = {"name": name, "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mnist-kit"}}
    if runtime == "kserve":
        # A RawDeployment scales with a HorizontalPodAutoscaler, on CPU or memory; Knative's concurrency is not there.
        if scale_metric not in ("cpu", "memory"):
            predictor["scaleMetric"], predictor["scaleTarget"] = "cpu", C.HPA_CPU_PERCENT
        container = kserve_container(serving_image, pod=pod, archive_name=archive_name)
        container["env"] = [*container["env"], {"name": "STORAGE_URI", "value": storage_uri}]
        predictor["containers"] = [container]
        predictor["terminationGracePeriodSeconds"] = C.TERMINATION_GRACE_S
        predictor["deploymentStrategy"] = ROLLING_UPDATE
        metadata["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    else:
        predictor["model"] = {
            "modelFormat": {"name": "pytorch"},
            "protocolVersion": "v2",
            "storageUri": storage_uri,
            "image": serving_image,
            "resources": pod.kubernetes(),
        }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


# A rollout starts each new pod before it takes an old one away: never fewer ready replicas than wanted.
ROLLING_UPDATE = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
# What makes a stop lose nothing: the pod drains (readiness 503, requests served) before its server stops, and the
# readiness probe notices within 2 s, for whatever fronts the pods without watching EndpointSlices.
DRAIN_ENV = {"name": C.DRAIN_ENV, "value": str(C.DRAIN_S)}
FAST_READINESS = {"periodSeconds": 2, "failureThreshold": 1}

SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": C.SERVING_USER,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def kserve_container(serving_image: str, *, pod: Resources, archive_name: str) -> dict:
    """The kserve runtime's container: the archive from /mnt/models, REST and gRPC on every interface of the pod,
    one worker per requested core, probes on KServe's v2 health routes (readiness 503 while it drains)."""
    ready, live = (
        {"httpGet": {"path": "/v2/health/ready", "port": "http1"}},
        {"httpGet": {"path": "/v2/health/live", "port": "http1"}},
    )
    return {
        "name": "kserve-container",
        "image": serving_image,
        "args": [
            "python",
            "-m",
            "mnist_kit.serving.kserve.server",
            f"--archive={C.DEPLOY_MODEL_STORE}/{archive_name}",
            f"--host={C.POD_HOST}",
            f"--http-port={C.INFERENCE_PORT}",
            f"--grpc-port={C.KSERVE_GRPC_PORT}",
            f"--workers={pod.cpus}",
        ],
        "ports": [
            {"name": "http1", "containerPort": C.INFERENCE_PORT, "protocol": "TCP"},
            {"name": "h2c", "containerPort": C.KSERVE_GRPC_PORT, "protocol": "TCP"},
        ],
        "env": [DRAIN_ENV],
        "resources": pod.kubernetes(),
        "startupProbe": {**ready, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**ready, **FAST_READINESS},
        "livenessProbe": {**live, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": SECURITY_CONTEXT,
    }


def kubernetes_manifests(
    name: str,
    config_text: str,
    serving_image: str,
    *,
    pod: Resources,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    runtime: str = "torchserve",
    archive_name: str = f"{C.MODEL_NAME}.mar",
) -> list[dict]:
    """ConfigMap, Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget, in the order
    `kubectl apply -f` creates them. The image carries the model store (Dockerfile target `model`, or
    `kserve-model` for the kserve runtime); the ConfigMap's config.properties is mounted over the image's, so
    operators tune TorchServe without a rebuild (the kserve runtime reads none: no ConfigMap)."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mnist-kit"}
    metadata = {"name": name, "labels": labels}
    if runtime == "kserve":
        container = kserve_container(serving_image, pod=pod, archive_name=archive_name)
        volumes, config_map, metrics_port = [], [], C.INFERENCE_PORT  # its /metrics is on the REST port
        service_ports = [
            {"name": "http", "port": C.INFERENCE_PORT, "targetPort": "http1"},
            {"name": "grpc", "port": C.KSERVE_GRPC_PORT, "targetPort": "h2c", "appProtocol": "kubernetes.io/h2c"},
        ]
    else:
        container = torchserve_container(serving_image, pod=pod)
        volumes = [{"name": "config", "configMap": {"name": f"{name}-config"}}]
        config_map = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-config", "labels": labels},
                "data": {Path(C.DEPLOY_CONFIG).name: config_text},
            }
        ]
        metrics_port = C.METRICS_PORT
        service_ports = [{"name": "http", "port": C.INFERENCE_PORT, "targetPort": "http"}]
    return [
        *config_map,
        deployment(metadata, container, volumes=volumes, metrics_port=metrics_port),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "selector": labels,
                # Inference only: TorchServe's management (8081) listens on the pod's loopback, metrics are scraped
                # per pod; the kserve runtime's gRPC v2 is inference too.
                "ports": service_ports,
            },
        },
        autoscaler(metadata, min_replicas=min_replicas, max_replicas=max_replicas),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata,
            # maxUnavailable, not minAvailable: with one replica a drain still proceeds.
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
    ]


def torchserve_container(serving_image: str, *, pod: Resources) -> dict:
    """The torchserve runtime's container: TorchServe in the foreground, its config.properties from the ConfigMap,
    ready by the entrypoint's health port (503 while it drains)."""
    ping = {"httpGet": {"path": "/ping", "port": "http"}}
    ready = {"httpGet": {"path": "/ping", "port": "health"}}
    return {
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
            {"name": "health", "containerPort": C.HEALTH_PORT},
        ],
        "env": [DRAIN_ENV],
        "resources": pod.kubernetes(),
        # Workers load in seconds; give a slow node a minute before liveness may restart the pod.
        "startupProbe": {**ready, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**ready, **FAST_READINESS},
        "livenessProbe": {**ping, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": SECURITY_CONTEXT,
        "volumeMounts": [{"name": "config", "mountPath": str(Path(C.DEPLOY_CONFIG).parent), "readOnly": True}],
    }


def deployment(metadata: dict, container: dict, *, volumes: list[dict], metrics_port: int) -> dict:
    """The Deployment of `container`: rolled one pod at a time, scraped by Prometheus, under the restricted Pod
    Security Standard."""
    labels = metadata["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        # No `replicas`: the autoscaler owns it, and a re-apply would reset it.
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": ROLLING_UPDATE,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(metrics_port),
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
                    # The drain, then the server's own stop, before the kubelet's SIGKILL.
                    "terminationGracePeriodSeconds": C.TERMINATION_GRACE_S,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def autoscaler(metadata: dict, *, min_replicas: int, max_replicas: int) -> dict:
    """The HorizontalPodAutoscaler of the Deployment named in `metadata`, on CPU utilisation."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": metadata["name"]},
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
    }


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
