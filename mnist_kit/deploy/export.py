"""Deploying beyond one machine: the KServe model storage layout, plain Kubernetes manifests, their resources.

Both exports write the layout KServe's TorchServe runtime mounts at /mnt/models (config/config.properties and
model-store/*.mar), which the kit's image (Dockerfile) serves the runtime's way:
`torchserve --start --model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties`.
`kserve` adds inferenceservice.yaml; `k8s` adds kubernetes.yaml (ConfigMap, Deployment, Service, autoscaler,
disruption budget). Pod resources come from what `mnist-kit bench` measured, and say so.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.deploy import manifests
from mnist_kit.deploy.resources import DeployError, Resources, resources
from mnist_kit.packaging import mar
from mnist_kit.serving.torchserve import config


@dataclass(frozen=True)
class Archive:
    """One .mar of the model store, with the settings its model-config.yaml gives TorchServe."""

    path: Path
    model_name: str
    version: str
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int


# The image tag's suffix per runtime: `mnist-kit-serving:0.1.0` (TorchServe) or `mnist-kit-serving:0.1.0-kserve`.
RUNTIME_TAGS = {"torchserve": "", "kserve": "-kserve"}


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
        archive = mar.read(path)
    except mar.MarError as e:
        raise DeployError(str(e)) from None
    return Archive(
        path=path,
        model_name=archive.model_name,
        version=archive.version,
        batch_size=int(archive.config.get("batchSize", 1)),
        max_batch_delay_ms=int(archive.config.get("maxBatchDelay", 100)),
        response_timeout_s=int(archive.config.get("responseTimeout", 120)),
    )


def model_snapshot(archives: list[Archive], workers: int, default_version: str | None = None) -> dict:
    """TorchServe's `model_snapshot`: every archive with its batching settings and `workers` workers. A model's
    default version (what /predictions/NAME and /v2/models/NAME answer) is `default_version` where given (a canary),
    else NAME.mar, the one `mnist-kit archive` writes without --version, else its first; `mnist-kit models
    set-default` changes it live."""
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
        chosen = [versions[default_version]] if default_version in versions else plain
        (chosen or list(versions.values()))[0]["defaultVersion"] = True
    return {"name": "startup.cfg", "modelCount": len(archives), "models": models}


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
    *,
    bench_report=C.BENCH_REPORT,
    name: str = C.MODEL_NAME,
    image: str | None = None,
    cpus: int | None = None,
    memory_mib: int | None = None,
    scale_target: int | None = None,
    scale_metric: str = C.SCALE_METRICS[0],
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    runtime: str = "torchserve",
    canary: str | None = None,
    canary_percent: int = C.CANARY_PERCENT,
    force: bool = False,
) -> Export:
    """OUT/config/config.properties, OUT/model-store/*.mar (copies) and OUT/inferenceservice.yaml; upload
    config/ and model-store/ to `storage_uri`, apply the yaml. The kserve runtime serves the default version's
    archive (NAME.mar), and reads no config.properties.

    With `canary` (a version of the store), the layout makes it the default version and the InferenceService sends
    it `canary_percent` % of the traffic, KServe's canary rollout: applied over the running InferenceService, the
    new revision takes that share and the last one the rest, until canaryTrafficPercent goes to 100 (promote) or
    0 (roll back). KServe splits traffic so in Serverless mode only, so not for the kserve runtime (a
    RawDeployment)."""
    _check_replicas(min_replicas, max_replicas, lowest=0)
    archives = read_archives(model_store)
    if canary is not None:
        _check_canary(archives, canary, canary_percent, runtime=runtime)
    pod = resources(bench_report, cpus=cpus, memory_mib=memory_mib, scale_target=scale_target)
    image = image or default_image(RUNTIME_TAGS[runtime])
    isvc = manifests.inference_service(
        name,
        storage_uri,
        image,
        pod=pod,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_metric=scale_metric,
        runtime=runtime,
        archive_name=default_archive(archives).path.name,
    )
    if canary is not None:
        isvc["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
    files = _write(
        out,
        archives,
        _config(archives, pod.cpus, default_version=canary),
        extra={"inferenceservice.yaml": manifests.dump_yaml([isvc])},
        force=force,
    )
    return Export(Path(out), files, pod, image)


def export_k8s(
    out,
    model_store=C.MODEL_STORE,
    bench_report=C.BENCH_REPORT,
    *,
    name: str = C.MODEL_NAME,
    image: str | None = None,
    cpus: int | None = None,
    memory_mib: int | None = None,
    min_replicas: int = C.MIN_REPLICAS,
    max_replicas: int = C.MAX_REPLICAS,
    runtime: str = "torchserve",
    force: bool = False,
) -> Export:
    """OUT/kubernetes.yaml, and the same layout as export_kserve (config/, model-store/) for building the image
    with the model baked in (Dockerfile target `model`, or `kserve-model`) or mounting it (compose.yaml)."""
    _check_replicas(min_replicas, max_replicas, lowest=1)
    archives = read_archives(model_store)
    pod = resources(bench_report, cpus=cpus, memory_mib=memory_mib)
    image = image or default_image(RUNTIME_TAGS[runtime] + "-model")
    config_text = _config(archives, pod.cpus)
    documents = manifests.kubernetes_manifests(
        name,
        config_text,
        image,
        pod=pod,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        runtime=runtime,
        archive_name=default_archive(archives).path.name,
    )
    files = _write(out, archives, config_text, extra={"kubernetes.yaml": manifests.dump_yaml(documents)}, force=force)
    return Export(Path(out), files, pod, image)


def default_archive(archives: list[Archive]) -> Archive:
    """The archive /predictions/NAME answers with: NAME.mar, as `mnist-kit archive` writes it without --version."""
    return next((a for a in archives if a.path.name == f"{a.model_name}.mar"), archives[0])


def _config(archives: list[Archive], workers: int, default_version: str | None = None) -> str:
    """The layout's config.properties: the cluster profile, serving every archive with `workers` workers."""
    snapshot = model_snapshot(archives, workers, default_version)
    return config.properties("cluster", model_snapshot=snapshot, workers=workers)


def _check_canary(archives: list[Archive], canary: str, percent: int, *, runtime: str) -> None:
    versions = sorted({a.version for a in archives})
    if canary not in versions:
        raise DeployError(f"--canary {canary}: the model store has no such version (it has {', '.join(versions)})")
    if not 0 <= percent <= 100:
        raise DeployError(f"--canary-percent {percent}: a share of the traffic, 0 to 100")
    if runtime == "kserve":
        raise DeployError(
            "--canary: KServe splits traffic between revisions in Serverless mode only, and the kserve runtime's "
            "InferenceService is a RawDeployment: roll it out as a Deployment (docs/DEPLOYING.md, rollouts)"
        )


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


def _write(out, archives: list[Archive], config_text: str, *, extra: dict[str, str], force: bool) -> list[str]:
    """Write the whole export beside OUT, then rename it into place: OUT is never half-written, and an
    existing OUT is replaced only with force."""
    out = Path(out)
    if out.exists() and not force:
        raise DeployError(f"{out} already exists: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        (staging / "config").mkdir()
        (staging / "config" / "config.properties").write_text(config_text)
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
