"""The documents a cluster applies: KServe's InferenceService, or plain Kubernetes (ConfigMap, Deployment, Service,
autoscaler, disruption budget), and YAML as people write it."""

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
    *,
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
