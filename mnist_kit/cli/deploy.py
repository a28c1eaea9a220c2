"""`mnist-kit export`: what a cluster needs to serve the model (KServe, or plain Kubernetes)."""

from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, path_option
from mnist_kit.paths import home


@cli.group()
def export():
    """Write what a cluster needs to serve the model (KServe, or plain Kubernetes), and to watch it.

    \b
    Both write the layout KServe's TorchServe runtime mounts at /mnt/models, and the kit's image (Dockerfile)
    serves it the runtime's way (torchserve --start --model-store=/mnt/models/model-store
    --ts-config=/mnt/models/config/config.properties):
      OUT/config/config.properties   addresses, every archive with its batching and workers (model_snapshot)
      OUT/model-store/*.mar          copies of the kit's model store (mnist-kit archive writes it)
    \b
      mnist-kit export kserve deploy/kserve --storage-uri gs://my-bucket/mnist   # + inferenceservice.yaml
      mnist-kit export k8s deploy/k8s --image registry.example.com/mnist-kit-serving:0.1.0-model
    \b
    Pods ask for what `mnist-kit bench` measured (reports/bench.json: one core per worker, the server's
    memory with headroom), or KServe's runtime defaults without it; the command says which. OUT is written
    whole or not at all, and replaced only with --force. docs/DEPLOYING.md has the next steps.
    \b
      mnist-kit export monitoring deploy/monitoring   # Prometheus, Alertmanager, Grafana: docs/MONITORING.md
    """


def export_options(f):
    for option in reversed(
        [
            path_option(
                "--model-store", default=C.MODEL_STORE, file_okay=False, help="Where mnist-kit archive wrote the .mar."
            ),
            path_option(
                "--bench",
                "bench_report",
                default=C.BENCH_REPORT,
                dir_okay=False,
                help="A mnist-kit bench report to size pods by; without the file, KServe's runtime defaults.",
            ),
            click.option("--name", default=C.MODEL_NAME, show_default=True, help="Name of the Kubernetes objects."),
            click.option(
                "--cpus", type=click.IntRange(1), help="CPU cores per pod (and workers): overrides the bench."
            ),
            click.option("--memory", "memory_mib", type=click.IntRange(256), help="MiB per pod: overrides the bench."),
            click.option("--min-replicas", type=click.IntRange(0), default=C.MIN_REPLICAS, show_default=True),
            click.option("--max-replicas", type=click.IntRange(1), default=C.MAX_REPLICAS, show_default=True),
            click.option(
                "--runtime",
                type=click.Choice(C.RUNTIMES),
                default="torchserve",
                show_default=True,
                help="torchserve: the kit's TorchServe image. kserve: the kit's kserve image (KServe's ModelServer, "
                "no Java; Dockerfile targets kserve and kserve-model), REST and gRPC v2.",
            ),
            click.option("--force", is_flag=True, help="Replace OUT if it exists."),
        ]
    ):
        f = option(f)
    return f


def _report_export(result) -> None:
    click.echo(f"wrote {result.out}/: {', '.join(result.files)}")
    pod = result.resources
    click.echo(f"pods: {pod.cpus} CPU (one worker per core), {pod.memory_mib}Mi; image {result.image}")
    click.echo(f"sized from {pod.source}")


@export.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--storage-uri",
    required=True,
    help="Where you will upload OUT/config and OUT/model-store: gs://..., s3://..., pvc://NAME/PATH.",
)
@click.option(
    "--image",
    default=None,
    help="The kit's serving image as your cluster pulls it (Dockerfile). Default: mnist-kit-serving:VERSION.",
)
@click.option(
    "--scale-metric",
    type=click.Choice(C.SCALE_METRICS),
    default=C.SCALE_METRICS[0],
    show_default=True,
    help="What KServe autoscales on (concurrency and rps need Knative, cpu and memory also work raw).",
)
@click.option(
    "--scale-target",
    type=click.IntRange(1),
    default=None,
    help="Target per pod for --scale-metric. Default: from the bench (concurrency reaching most of its best "
    f"throughput), else {C.DEFAULT_SCALE_TARGET}.",
)
@click.option(
    "--canary",
    default=None,
    metavar="VERSION",
    help="A canary rollout of VERSION (of the model store): the default version of this layout, given "
    "--canary-percent of the traffic by KServe while the running revision keeps the rest. Upload it to a new "
    "--storage-uri.",
)
@click.option(
    "--canary-percent",
    type=click.IntRange(0, 100),
    default=C.CANARY_PERCENT,
    show_default=True,
    help="The canary's share of requests (canaryTrafficPercent): 100 promotes it, 0 rolls it back.",
)
@export_options
def kserve(
    out,
    storage_uri,
    image,
    scale_metric,
    scale_target,
    canary,
    canary_percent,
    model_store,
    bench_report,
    name,
    cpus,
    memory_mib,
    min_replicas,
    max_replicas,
    runtime,
    force,
):
    """The KServe model storage layout in OUT, and OUT/inferenceservice.yaml.

    \b
    The InferenceService (serving.kserve.io/v1beta1) uses KServe's TorchServe runtime (modelFormat pytorch)
    with the Open Inference Protocol (protocolVersion v2) and the kit's image, reading the model from
    --storage-uri; with --runtime kserve, the kit's kserve image as a custom predictor container (REST and
    gRPC v2, a RawDeployment), which depends on no ClusterServingRuntime:
      mnist-kit export kserve deploy/kserve --storage-uri gs://my-bucket/mnist
      gsutil cp -r deploy/kserve/config deploy/kserve/model-store gs://my-bucket/mnist/
      kubectl apply -f deploy/kserve/inferenceservice.yaml
    """
    from mnist_kit.deploy.export import export_kserve

    result = export_kserve(
        out,
        storage_uri,
        model_store,
        bench_report=bench_report,
        name=name,
        image=image,
        cpus=cpus,
        memory_mib=memory_mib,
        scale_target=scale_target,
        scale_metric=scale_metric,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        runtime=runtime,
        canary=canary,
        canary_percent=canary_percent,
        force=force,
    )
    _report_export(result)
    click.echo(
        f"next: upload {out}/config and {out}/model-store to {storage_uri}, "
        f"then kubectl apply -f {out}/inferenceservice.yaml"
    )
    if canary:
        patch = 'kubectl patch isvc {} --type merge -p \'{{"spec":{{"predictor":{{"canaryTrafficPercent":{}}}}}}}\''
        click.echo(f"{canary} then takes {canary_percent} % of requests; promote: {patch.format(name, 100)}")
        click.echo(f"roll back: {patch.format(name, 0)}")


@export.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--image",
    default=None,
    help="The image with the model baked in (Dockerfile target `model`, built from OUT when it lies under the "
    "checkout's deploy/), as your cluster pulls it. Default: mnist-kit-serving:VERSION-model.",
)
@export_options
def k8s(out, image, model_store, bench_report, name, cpus, memory_mib, min_replicas, max_replicas, runtime, force):
    """Plain Kubernetes, no KServe: OUT/kubernetes.yaml, and the layout to bake into the image.

    \b
    kubernetes.yaml holds, in the order kubectl creates them: a ConfigMap (config.properties), a Deployment
    (probes on /ping, one TorchServe worker per requested core, non-root, no privilege escalation, no
    capabilities, Prometheus scrape annotations for 8082), a Service for inference only (8080), a
    HorizontalPodAutoscaler on CPU and a PodDisruptionBudget:
      mnist-kit export k8s deploy/k8s --image registry.example.com/mnist-kit-serving:0.1.0-model
      podman build --target model --build-arg LAYOUT=deploy/k8s -t registry.example.com/mnist-kit-serving:0.1.0-model .
      podman push registry.example.com/mnist-kit-serving:0.1.0-model
      kubectl apply -f deploy/k8s/kubernetes.yaml

    An OUT outside the checkout's deploy/ is written all the same, since kubectl and compose read it from
    anywhere, with a warning and the copy into deploy/ that bakes it in: .dockerignore lets only deploy/ into
    the build context.
    """
    from mnist_kit.deploy.export import export_k8s, image_layout

    result = export_k8s(
        out,
        model_store,
        bench_report,
        name=name,
        image=image,
        cpus=cpus,
        memory_mib=memory_mib,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        runtime=runtime,
        force=force,
    )
    _report_export(result)
    target = "kserve-model" if runtime == "kserve" else "model"
    context = home()
    layout = image_layout(out, context)
    copy = ""
    if layout is None:
        layout = f"{C.DEPLOY_DIR}/{out.name}"
        click.echo(
            f"warning: {out} is outside {context / C.DEPLOY_DIR}/, the only export folder the image build sees "
            f"(.dockerignore): copy it there to bake it in",
            err=True,
        )
        copy = f"cp -r {out} {context / layout}, "
    click.echo(
        f"next: {copy}build and push the image with the model (podman build --target {target} "
        f"--build-arg LAYOUT={layout} -t {result.image} {context}), then kubectl apply -f {out}/kubernetes.yaml"
    )


@export.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--interval",
    default=C.MONITORING_INTERVAL,
    show_default=True,
    help="Prometheus's evaluation interval (it scrapes twice as often); every alert's window and wait is a multiple "
    "of it.",
)
@click.option(
    "--targets",
    default=f"{C.HOST}:{C.INFERENCE_PORT}",
    show_default=True,
    help="The serving runtimes to scrape (their /metrics is on the inference port), HOST:PORT,...",
)
@click.option("--pad", default=None, metavar="HOST:PORT", help="Also scrape a pad's /metrics (its corrections).")
@click.option("--alertmanager", default=C.MONITORING_ALERTMANAGER, show_default=True, metavar="HOST:PORT")
@click.option("--name", default=C.MODEL_NAME, show_default=True, help="The Service the ServiceMonitor selects.")
@click.option(
    "--runbooks",
    default="docs/MONITORING.md",
    show_default=True,
    help="Where the alerts' runbook_url points: docs/MONITORING.md as your people read it (a URL).",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
def monitoring(out, interval, targets, pad, alertmanager, name, runbooks, force):
    """Prometheus's config, alert rules and their tests, Alertmanager's config and a Grafana dashboard, in OUT.

    \b
      mnist-kit export monitoring deploy/monitoring --pad 127.0.0.1:8000
      promtool test rules deploy/monitoring/prometheus/rules.test.yml
      prometheus --config.file=deploy/monitoring/prometheus/prometheus.yml
    \b
    OUT/prometheus/      prometheus.yml, rules.yml (the alerts), rules.test.yml (promtool's tests of them)
    OUT/alertmanager/    alertmanager.yml: replace its webhook url, a placeholder
    OUT/grafana/         dashboard.json: import it, pick the Prometheus
    OUT/kubernetes/      monitoring.yaml: a PrometheusRule and a ServiceMonitor (the Prometheus Operator)
    What each alert means and what to do: docs/MONITORING.md.
    """
    from mnist_kit.deploy.monitoring import export_monitoring

    result = export_monitoring(
        out,
        interval,
        [t for t in targets.split(",") if t.strip()],
        pad=pad,
        alertmanager=alertmanager,
        name=name,
        runbooks=runbooks,
        force=force,
    )
    click.echo(f"wrote {result.out}/: {', '.join(result.files)}")
    click.echo(
        f"next: promtool test rules {out}/prometheus/rules.test.yml; replace the webhook in "
        f"{out}/alertmanager/alertmanager.yml; prometheus --config.file={out}/prometheus/prometheus.yml"
    )


@cli.group()
def image():
    """The kit's serving images, built with podman or docker from the checkout's Dockerfile."""


@image.command("build")
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(["runtime", "model", "kserve", "kserve-model"]),
    help="A Dockerfile target to build (repeat for several). Default: all four.",
)
@click.option("--engine", type=click.Choice(["podman", "docker"]), default=None, help="Default: podman, else docker.")
@path_option("--model-store", default=C.MODEL_STORE, file_okay=False, help="What the model targets bake in.")
@click.option(
    "--ca-bundle",
    envvar="PIP_CERT",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A CA bundle pip inside the build trusts, passed as a build secret (in no layer). Default: $PIP_CERT.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def image_build(targets, engine, model_store, ca_bundle, as_json):
    """Build the serving images and tag each localhost/mnist-kit:TARGET (and as the exports name it).

    \b
      mnist-kit image build --target kserve      # KServe's ModelServer with the kit: no Java, no torch
      mnist-kit image build                      # runtime, model, kserve, kserve-model
    \b
    The model targets bake in the current model store: the command exports its layout to deploy/image/ first, so
    it works right after the quickstart. Where no container registry answers, the base is a Debian 12 made with
    debootstrap (as root), once. Each build's output goes to logs/image-TARGET.log.
    """
    import json

    from mnist_kit.deploy import image as images

    tool = images.engine(engine)
    built = images.build(
        targets or images.TARGETS,
        tool=tool,
        context=home(),
        model_store=model_store,
        logs=home() / C.LOGS,
        ca_bundle=ca_bundle,
        log=lambda message: click.echo(message, err=True),
    )
    if as_json:
        click.echo(json.dumps([b.__dict__ for b in built], indent=2))
        return
    for b in built:
        click.echo(f"{b.tags[0]} ({b.tags[1]}): {b.size_mb:.0f} MB, built in {b.seconds:.0f} s")


@image.command("measure")
@click.option("--engine", type=click.Choice(["podman", "docker"]), default=None, help="Default: podman, else docker.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
def image_measure(engine, out):
    """Run each built image once: its size, the seconds from `run` to its first answer, its memory then.

    \b
      mnist-kit image build && mnist-kit image measure --out docs/containers/amd-epyc-avx512.json
    \b
    The images serve the layout `image build` exported to deploy/image/ (mounted for runtime and kserve, baked in
    the others), the kserve ones on a read-only root. docs/DEPLOYING.md's table is this command's output.
    """
    import json

    from mnist_kit.bench.costs import SAMPLE
    from mnist_kit.deploy import image as images
    from mnist_kit.machine import cpu

    tool = images.engine(engine)
    sample = SAMPLE.read_bytes()
    report = {
        "machine": cpu(),
        "engine": images.engine_version(tool),
        "images": images.measure(tool, home() / images.LAYOUT, sample=sample, log=lambda m: click.echo(m, err=True)),
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(images.markdown(report))
