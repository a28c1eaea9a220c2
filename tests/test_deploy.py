"""mnist-kit export: the KServe layout and the plain Kubernetes manifests, validated offline against the
schemas a cluster would use, and a real TorchServe started from the layout the way KServe's runtime starts it."""

import base64
import gzip
import json
import os
import signal
from pathlib import Path

import jsonschema
import psutil
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT
from harness import RuntimeServer
from kubernetes_validate import utils as kubernetes_validate

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.deploy import export
from mnist_kit.packaging import archive
from mnist_kit.serving import client

KSERVE_SCHEMA_NAME = "inferenceservice-v1beta1.schema.json.gz"
# CI clones the repo beside shared/, as it does for the MNIST files (../shared/data/mnist).
KSERVE_SCHEMA = Path(os.environ.get("KSERVE_SCHEMA") or ROOT.parent / "shared" / "kserve" / KSERVE_SCHEMA_NAME)
BENCH = {
    "machine": {"cpu": "AMD EPYC", "cpus": 2},
    "settings": {"batch_size": 16, "max_batch_delay_ms": 1, "workers": 2},
    "kit": {
        "memory_mib": 700,
        "sweep": [
            {"concurrency": 1, "req_per_s": 200.0},
            {"concurrency": 8, "req_per_s": 900.0},
            {"concurrency": 32, "req_per_s": 1900.0},
            {"concurrency": 64, "req_per_s": 2100.0},
        ],
    },
}


@pytest.fixture(scope="module")
def eager_store(untrained_checkpoint, tmp_path_factory) -> Path:
    """A model store with two versions, as mnist-kit archive writes them (untrained: the unit tier packs, never
    serves it)."""
    store = tmp_path_factory.mktemp("store")
    archive.build(untrained_checkpoint, store, mode="eager")
    archive.build(untrained_checkpoint, store, version="2.0", mode="eager", batch_size=8, max_batch_delay_ms=5)
    return store


@pytest.fixture
def bench_report(tmp_path) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    return path


@pytest.fixture(scope="module")
def kserve_validator() -> jsonschema.protocols.Validator:
    """A validator of KServe's InferenceService schema, the schema checked once (jsonschema.validate checks it again on
    every call, seconds each); a missing file skips, except in CI, where it must be there."""
    if not KSERVE_SCHEMA.is_file():
        message = f"KServe schema not found at {KSERVE_SCHEMA}: set KSERVE_SCHEMA (CI uses ../shared/kserve/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with gzip.open(KSERVE_SCHEMA, "rt") as f:
        schema = json.load(f)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return jsonschema.validators.validator_for(schema)(schema)


def load_all(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in documents}


def properties(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def unknown_fields(document, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not name: the API server would drop them without a word (structural pruning)."""
    if isinstance(document, dict) and "properties" in schema:
        found = []
        for key, value in document.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(document, list) and "items" in schema:
        return [f for i, item in enumerate(document) for f in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


# The KServe export


def test_export_kserve_writes_the_layout_the_runtime_mounts(eager_store, bench_report, tmp_path):
    out = tmp_path / "kserve"
    result = export.export_kserve(out, "gs://bucket/mnist", eager_store, bench_report=bench_report)
    assert result.files == [
        "config/config.properties",
        "inferenceservice.yaml",
        "model-store/mnist-2.0.mar",
        "model-store/mnist.mar",
    ]
    for mar in ("mnist.mar", "mnist-2.0.mar"):
        assert (out / "model-store" / mar).read_bytes() == (eager_store / mar).read_bytes()


def test_the_config_serves_every_archive_with_its_batching_and_one_worker_per_core(eager_store, bench_report, tmp_path):
    export.export_kserve(tmp_path / "out", "gs://b/m", eager_store, bench_report=bench_report)
    props = properties((tmp_path / "out" / "config" / "config.properties").read_text())
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["metrics_address"] == "http://0.0.0.0:8082" and props["metrics_mode"] == "prometheus"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["default_workers_per_model"] == "2"
    assert props["enable_model_api"] == "false"
    models = json.loads(props["model_snapshot"])["models"]["mnist"]
    assert models["1.0"] == {
        "defaultVersion": True,
        "marName": "mnist.mar",
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": C.BATCH_SIZE,
        "maxBatchDelay": C.MAX_BATCH_DELAY_MS,
        "responseTimeout": C.RESPONSE_TIMEOUT_S,
    }
    assert models["2.0"]["batchSize"] == 8 and models["2.0"]["maxBatchDelay"] == 5
    assert not models["2.0"]["defaultVersion"]


def test_the_config_leaves_the_protocol_to_the_handler_not_to_torchserves_envelopes(eager_store, tmp_path):
    # TorchServe 0.12's kserve/kservev2 envelopes keep only the first request of a batch; without
    # enable_envvars_config TorchServe ignores the TS_SERVICE_ENVELOPE that KServe's runtime sets.
    export.export_kserve(tmp_path / "out", "gs://b/m", eager_store, bench_report=None)
    props = properties((tmp_path / "out" / "config" / "config.properties").read_text())
    assert "service_envelope" not in props
    assert props.get("enable_envvars_config", "false") == "false"


def test_the_inference_service_validates_against_kserves_schema(eager_store, bench_report, kserve_validator, tmp_path):
    export.export_kserve(tmp_path / "out", "s3://bucket/mnist", eager_store, bench_report=bench_report)
    [isvc] = load_all(tmp_path / "out" / "inferenceservice.yaml")
    kserve_validator.validate(isvc)
    assert unknown_fields(isvc, kserve_validator.schema) == []


def test_the_inference_service_is_torchserve_on_the_open_inference_protocol(eager_store, bench_report, tmp_path):
    export.export_kserve(
        tmp_path / "out",
        "pvc://models/mnist",
        eager_store,
        bench_report=bench_report,
        image="r.example/serving:1",
        max_replicas=6,
    )
    [isvc] = load_all(tmp_path / "out" / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "pytorch"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "pvc://models/mnist" and model["image"] == "r.example/serving:1"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 6)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 32)


def test_the_kserve_runtimes_inference_service_is_the_kits_container_and_validates(
    eager_store, bench_report, kserve_validator, tmp_path
):
    export.export_kserve(tmp_path / "out", "s3://b/mnist", eager_store, bench_report=bench_report, runtime="kserve")
    [isvc] = load_all(tmp_path / "out" / "inferenceservice.yaml")
    kserve_validator.validate(isvc)
    assert unknown_fields(isvc, kserve_validator.schema) == []
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    assert "model" not in predictor and container["image"].endswith("-kserve")
    assert container["env"] == [
        {"name": C.DRAIN_ENV, "value": str(C.DRAIN_S)},
        {"name": "STORAGE_URI", "value": "s3://b/mnist"},
    ]
    assert "--archive=/mnt/models/model-store/mnist.mar" in container["args"] and "--workers=2" in container["args"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080), ("h2c", 8081)]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", C.HPA_CPU_PERCENT)  # an HPA's metric


def test_the_kserve_runtimes_inference_service_rolls_out_without_losing_a_replica_or_a_request(
    eager_store, bench_report, tmp_path
):
    """A new pod before an old one goes; the old one drains, then stops, well within its grace period."""
    export.export_kserve(tmp_path / "out", "s3://b/mnist", eager_store, bench_report=bench_report, runtime="kserve")
    [isvc] = load_all(tmp_path / "out" / "inferenceservice.yaml")
    predictor = isvc["spec"]["predictor"]
    assert predictor["deploymentStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert predictor["terminationGracePeriodSeconds"] > C.DRAIN_S + C.KSERVE_GRACE_S
    assert predictor["containers"][0]["readinessProbe"]["failureThreshold"] == 1


def test_the_kserve_runtimes_kubernetes_documents_validate_and_expose_rest_and_grpc(eager_store, tmp_path):
    export.export_k8s(tmp_path / "k8s", eager_store, runtime="kserve")
    documents = load_all(tmp_path / "k8s" / "kubernetes.yaml")
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    for document in documents:
        kubernetes_validate.validate(document, C.KUBERNETES_VERSION, strict=True)
    kinds = by_kind(documents)
    [container] = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith("-kserve-model") and container["args"][:3] == [
        "python",
        "-m",
        "mnist_kit.serving.kserve.server",
    ]
    assert [p["port"] for p in kinds["Service"]["spec"]["ports"]] == [C.INFERENCE_PORT, C.KSERVE_GRPC_PORT]


def test_export_k8s_for_the_kserve_runtime_hints_its_image_target(eager_store, tmp_path):
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        cli, ["export", "k8s", str(out), "--model-store", str(eager_store), "--runtime", "kserve"]
    )
    assert result.exit_code == 0, result.output
    assert "--target kserve-model" in result.stdout and "-kserve-model" in result.stdout


def test_pods_are_sized_from_the_bench_and_say_so(bench_report):
    pod = export.resources(bench_report)
    assert pod.cpus == 2  # the bench's workers, one per core
    assert pod.memory_mib == 1280  # 700 MiB measured × 1.5, rounded up to 256 MiB
    assert pod.scale_target == 32  # the first concurrency within 85 % of the best throughput
    assert pod.kubernetes()["requests"] == pod.kubernetes()["limits"] == {"cpu": "2", "memory": "1280Mi"}
    assert str(bench_report) in pod.source and "700 MiB measured" in pod.source


def test_without_a_bench_pods_get_kserves_runtime_defaults_and_say_so(tmp_path):
    pod = export.resources(tmp_path / "missing.json")
    assert (pod.cpus, pod.memory_mib) == (C.DEFAULT_CPUS, C.DEFAULT_MEMORY_MIB)
    assert "no bench report" in pod.source


def test_given_sizes_override_the_bench(bench_report):
    pod = export.resources(bench_report, cpus=4, memory_mib=3000)
    assert (pod.cpus, pod.memory_mib) == (4, 3000) and pod.source.startswith("given: cpus 4, memory_mib 3000")


def test_a_file_that_is_not_a_bench_report_is_a_clear_error(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text('{"kit": {}}')
    with pytest.raises(export.DeployError, match="is not a report of mnist-kit bench"):
        export.resources(bad)


def test_an_empty_model_store_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(export.DeployError, match="train and archive first"):
        export.export_kserve(tmp_path / "out", "gs://b/m", tmp_path)
    assert not (tmp_path / "out").exists()


def test_an_existing_out_is_kept_without_force_and_replaced_with_it(eager_store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(export.DeployError, match="--force"):
        export.export_k8s(out, eager_store)
    assert (out / "mine.txt").is_file()
    export.export_k8s(out, eager_store, force=True)
    assert not (out / "mine.txt").exists() and (out / "kubernetes.yaml").is_file()


def test_a_failed_export_leaves_nothing_behind(eager_store, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "mnist.mar").write_bytes((eager_store / "mnist.mar").read_bytes())
    (store / "broken.mar").write_bytes(b"not a zip")
    with pytest.raises(export.DeployError, match="broken.mar is not a TorchServe archive"):
        export.export_kserve(tmp_path / "out", "gs://b/m", store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


# The plain Kubernetes export


@pytest.fixture
def manifests(eager_store, bench_report, tmp_path) -> list[dict]:
    export.export_k8s(tmp_path / "k8s", eager_store, bench_report, image="r.example/mnist:1-model", max_replicas=5)
    return load_all(tmp_path / "k8s" / "kubernetes.yaml")


def test_every_kubernetes_document_validates_against_the_bundled_schemas(manifests):
    assert [d["kind"] for d in manifests] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for document in manifests:
        # strict: a field Kubernetes does not know is an error, not silently dropped.
        kubernetes_validate.validate(document, C.KUBERNETES_VERSION, strict=True)


def test_the_validation_catches_a_wrong_field(manifests):
    deployment = by_kind(manifests)["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, C.KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_version_is_the_newest_kubernetes_validate_bundles():
    assert C.KUBERNETES_VERSION == kubernetes_validate.major_minor(kubernetes_validate.latest_version())


def test_the_deployment_probes_ping_and_runs_one_worker_per_requested_core(manifests):
    """Liveness on TorchServe's /ping; readiness on the entrypoint's, which also says 503 while the pod drains."""
    kinds = by_kind(manifests)
    [container] = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "health"}
    assert {"name": "health", "containerPort": C.HEALTH_PORT} in container["ports"]
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "2", "memory": "1280Mi"}
    config = properties(kinds["ConfigMap"]["data"]["config.properties"])
    assert config["default_workers_per_model"] == container["resources"]["requests"]["cpu"]
    assert container["image"] == "r.example/mnist:1-model"
    assert container["args"][:3] == ["torchserve", "--start", "--foreground"]


def test_the_deployment_rolls_out_a_new_pod_before_it_stops_an_old_one(manifests):
    assert by_kind(manifests)["Deployment"]["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_a_stopping_pod_drains_then_stops_within_its_grace_period(manifests):
    """The drain (readiness 503 within 2 s, requests still served) and TorchServe's stop fit in the grace period."""
    pod = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": C.DRAIN_ENV, "value": str(C.DRAIN_S)} in container["env"]
    assert pod["terminationGracePeriodSeconds"] >= C.DRAIN_S + 30
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 2


def test_the_deployment_runs_as_user_1000_without_privileges(manifests):
    pod = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]
    assert security == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_prometheus_scrapes_the_metrics_port(manifests):
    annotations = by_kind(manifests)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8082",
        "prometheus.io/path": "/metrics",
    }


def test_the_service_exposes_inference_only(manifests):
    [port] = by_kind(manifests)["Service"]["spec"]["ports"]
    assert port["port"] == C.INFERENCE_PORT
    config = properties(by_kind(manifests)["ConfigMap"]["data"]["config.properties"])
    assert config["management_address"].startswith("http://127.0.0.1:")


def test_the_autoscaler_scales_the_deployment_on_cpu(manifests):
    kinds = by_kind(manifests)
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in kinds["Deployment"]["spec"]  # the autoscaler owns it
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]


def test_the_configmap_holds_the_same_config_as_the_layout(eager_store, tmp_path):
    export.export_k8s(tmp_path / "k8s", eager_store)
    [config_map] = [d for d in load_all(tmp_path / "k8s" / "kubernetes.yaml") if d["kind"] == "ConfigMap"]
    assert config_map["data"]["config.properties"] == (tmp_path / "k8s" / "config" / "config.properties").read_text()


# The command line


def test_export_kserve_needs_a_storage_uri(tmp_path):
    result = CliRunner().invoke(cli, ["export", "kserve", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--storage-uri" in result.output


def test_export_says_what_it_wrote_and_what_sized_the_pods(eager_store, bench_report, tmp_path):
    out = tmp_path / "out"
    args = ["export", "k8s", str(out), "--model-store", str(eager_store), "--bench", str(bench_report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}/" in result.output
    assert "pods: 2 CPU" in result.output and f"sized from {bench_report}" in result.output


def test_export_k8s_under_deploy_hints_the_image_build_with_the_layout_relative_to_the_checkout(
    eager_store, tmp_path, monkeypatch
):
    checkout = tmp_path / "checkout"
    monkeypatch.setenv(C.HOME_ENV, str(checkout))
    out = checkout / "deploy" / "k8s"
    result = CliRunner().invoke(cli, ["export", "k8s", str(out), "--model-store", str(eager_store)])
    assert result.exit_code == 0, result.output
    assert f"--build-arg LAYOUT=deploy/k8s -t {export.default_image('-model')} {checkout})" in result.stdout
    assert result.stderr == ""


def test_export_k8s_outside_deploy_warns_and_hints_the_copy_that_lets_the_image_build_see_it(
    eager_store, tmp_path, monkeypatch
):
    checkout = tmp_path / "checkout"
    monkeypatch.setenv(C.HOME_ENV, str(checkout))
    out = tmp_path / "elsewhere" / "mnist-layout"
    result = CliRunner().invoke(cli, ["export", "k8s", str(out), "--model-store", str(eager_store)])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"warning: {out} is outside {checkout}/deploy/, the only export folder")
    assert f"next: cp -r {out} {checkout}/deploy/mnist-layout, build" in result.stdout
    assert "--build-arg LAYOUT=deploy/mnist-layout " in result.stdout
    assert export.image_layout(checkout / "deploy" / "mnist-layout", checkout) == "deploy/mnist-layout"


def test_export_without_archives_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["export", "k8s", str(tmp_path / "out"), "--model-store", str(tmp_path)])
    assert result.exit_code == 1 and "train and archive first" in result.output and result.output.count("\n") == 1


# A real TorchServe from the layout


@pytest.fixture(scope="module")
def runtime_server(model_store, tmp_path_factory):
    layout = tmp_path_factory.mktemp("layout") / "kserve"
    export.export_kserve(layout, "gs://bucket/mnist", model_store, bench_report=None, cpus=2)
    with RuntimeServer(layout, envelope="kservev2") as ts:
        yield ts


def test_torchserve_started_from_the_layout_answers_ping(runtime_server):
    assert json.loads(runtime_server.get(f"{runtime_server.inference_url}/ping")) == {"status": "Healthy"}


def test_torchserve_started_from_the_layout_runs_the_snapshots_batching_and_workers(runtime_server):
    [described] = json.loads(runtime_server.get(f"{runtime_server.management_url}/models/mnist"))
    assert (described["batchSize"], described["maxBatchDelay"]) == (C.BATCH_SIZE, C.MAX_BATCH_DELAY_MS)
    assert len(described["workers"]) == 2


def test_torchserve_started_from_the_layout_reads_digits_sent_as_v2_bytes(runtime_server, digits):
    body = {
        "id": "deploy-test",
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(digits)],
                "datatype": "BYTES",
                "data": [base64.b64encode(path.read_bytes()).decode() for path in digits],
            }
        ],
    }
    answer = json.loads(
        client.request(
            f"{runtime_server.inference_url}/v2/models/mnist/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    )
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert answer["id"] == "deploy-test" and answer["model_name"] == "mnist"
    assert outputs["predict"]["datatype"] == "INT64" and outputs["predict"]["shape"] == [len(digits)]
    assert outputs["predict"]["data"] == [int(path.stem) for path in digits]
    assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [len(digits), 10]


def test_the_images_start_keeps_torchserve_in_the_foreground_and_a_stop_signal_ends_it(model_store, tmp_path):
    layout = tmp_path / "layout"
    export.export_k8s(layout, model_store, None, cpus=1)
    with RuntimeServer(layout, envelope="kservev2", container=True) as ts:
        assert ts.process.poll() is None  # a bare `torchserve --start` returns at once; the entrypoint's stays
        assert json.loads(ts.get(f"{ts.inference_url}/ping")) == {"status": "Healthy"}
        processes = [psutil.Process(pid) for pid in (ts.pid(), *ts.worker_pids())]
        os.killpg(ts.process.pid, signal.SIGTERM)
        assert ts.process.wait(timeout=60) is not None
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert alive == []


def test_a_canary_export_makes_the_version_the_default_and_splits_the_traffic(
    eager_store, bench_report, kserve_validator, tmp_path
):
    export.export_kserve(
        tmp_path / "out", "s3://b/mnist-2.0", eager_store, bench_report=bench_report, canary="2.0", canary_percent=20
    )
    [isvc] = load_all(tmp_path / "out" / "inferenceservice.yaml")
    kserve_validator.validate(isvc)
    assert unknown_fields(isvc, kserve_validator.schema) == []
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    models = properties((tmp_path / "out" / "config" / "config.properties").read_text())["model_snapshot"]
    defaults = {v: m["defaultVersion"] for v, m in json.loads(models)["models"]["mnist"].items()}
    assert defaults == {"1.0": False, "2.0": True}


def test_a_canary_of_a_version_the_store_lacks_is_refused(eager_store, tmp_path):
    missing = r"--canary 9.0: the model store has no such version \(it has 1.0, 2.0\)"
    with pytest.raises(export.DeployError, match=missing):
        export.export_kserve(tmp_path / "out", "s3://b/m", eager_store, bench_report=None, canary="9.0")
    assert not (tmp_path / "out").exists()


def test_a_canary_of_the_kserve_runtime_is_refused_with_why(eager_store, tmp_path):
    with pytest.raises(export.DeployError, match="Serverless mode only"):
        export.export_kserve(
            tmp_path / "out", "s3://b/m", eager_store, bench_report=None, canary="2.0", runtime="kserve"
        )
