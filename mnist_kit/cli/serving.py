"""Commands that start and stop a server in the background, either runtime, from outside it (the launchers of
serving/torchserve and serving/kserve): serve, stop. Asking a running server is cli/querying.py."""

import os
import time

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, given, key_file, path_option
from mnist_kit.paths import home
from mnist_kit.serving import processes
from mnist_kit.serving.kserve import launcher as kserve_launcher
from mnist_kit.serving.torchserve import config
from mnist_kit.serving.torchserve import launcher as torchserve_launcher


@cli.command()
@click.option(
    "--runtime",
    type=click.Choice(C.RUNTIMES),
    default="torchserve",
    show_default=True,
    help="torchserve: TorchServe (archived upstream: no fixes), configured by --ts-config. kserve: KServe's "
    "ModelServer (maintained; needs the kserve extra) serving the same archive: REST on --http-port, gRPC v2 on "
    "--grpc-port.",
)
@click.option(
    "--profile",
    type=click.Choice(["local", "production"]),
    default="local",
    show_default=True,
    help="local: loopback only, no tokens. production: inference on every interface, every request needs the "
    f"token (its key in {C.KEY_FILE} in the kit's home); TorchServe reads it from config.production.properties.",
)
@path_option(
    "--ts-config",
    default=None,
    dir_okay=False,
    help=f"TorchServe configuration, instead of the profile's ({C.TS_CONFIG} or config.production.properties).",
)
@path_option(
    "--archive",
    default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar",
    dir_okay=False,
    help="kserve: the archive to serve (TorchServe serves what --ts-config names); several versions: --models.",
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=C.INFERENCE_PORT, show_default=True, help="kserve")
@click.option(
    "--grpc-port", type=click.IntRange(1, 65535), default=C.KSERVE_GRPC_PORT, show_default=True, help="kserve"
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=os.cpu_count() or 1,
    show_default="one per core",
    help="kserve: worker processes, each one intra-op thread (TorchServe starts one per core by itself).",
)
@click.option(
    "--models",
    default=None,
    metavar="A.mar,B.mar",
    help="These archives of the model store, in this order (TorchServe: instead of the config's load_models); the "
    "first version of a model is its default (versions side by side, for `mnist-kit ab`). kserve: one model's "
    "versions, instead of --archive.",
)
@click.option(
    "--shadow",
    default=None,
    metavar="VERSION",
    help="kserve: this version of --models reads the same pictures as the default, in the same worker and batch; "
    f"its answers are never returned, its disagreements kept in {C.SHADOW_DB} in the kit's home.",
)
@click.option(
    "--shadow-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    metavar="F",
    help="kserve: the share of requests the --shadow version reads, drawn per request.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=120,
    show_default=True,
    help="Seconds to wait for every model to have a ready worker.",
)
def serve(runtime, profile, ts_config, archive, http_port, grpc_port, workers, models, shadow, shadow_share, wait):
    """Start a server in the background, after checking what usually makes it fail.

    Says plainly when the model store has no archive (train and archive first), when a server is already
    running, or when a port is taken; then starts `torchserve --start --ts-config TS_CONFIG --ncs` in the kit's
    home, or with --runtime kserve KServe's ModelServer (its output in logs/kserve.out), and waits until the
    model answers. Stop either with `mnist-kit stop`.

    \b
      mnist-kit serve                                   # TorchServe on 127.0.0.1:8080
      mnist-kit serve --runtime kserve                  # KServe's ModelServer: REST :8080, gRPC :8081
      mnist-kit serve --runtime kserve --profile production
      mnist-kit serve --models mnist.mar,mnist-2.0.mar    # two versions, 1.0 the default
      mnist-kit serve --runtime kserve --models mnist.mar,mnist-2.0.mar --shadow 2.0
    """
    root = home()
    ctx = click.get_current_context()
    if runtime == "kserve":
        torchserve_only = given(ctx, "ts_config")
        if torchserve_only:
            raise click.UsageError(
                f"{torchserve_only[0]} configures TorchServe; the kserve runtime takes --archive or --models, "
                "--http-port, --grpc-port, --workers and --shadow"
            )
        if models and given(ctx, "archive"):
            raise click.UsageError("give --archive or --models, not both: --models names the versions to serve")
        if given(ctx, "shadow_share") and not shadow:
            raise click.UsageError("--shadow-share is the share of requests a --shadow version reads: give --shadow")
        archives = [root / C.MODEL_STORE / name for name in models.split(",")] if models else [archive]
        production = profile == "production"
        host = C.POD_HOST if production else C.HOST
        server = kserve_launcher.HomeKServe(
            archives,
            root,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            workers=workers,
            key_file=key_file() if production else None,
            shadow=kserve_launcher.Shadowing(shadow, shadow_share, root / C.SHADOW_DB) if shadow else None,
        )
        server.start(wait)  # not ready in time, or interrupted: nothing is left running
        tokens = f"; every request needs the token in {key_file()}" if production else ""
        shadowing = f"; {shadow} shadows the default, disagreements in {root / C.SHADOW_DB}" if shadow else ""
        click.echo(
            f"KServe ModelServer ready: REST http://{host}:{http_port} (/predictions, v1, v2, /metrics), gRPC v2 "
            f"{host}:{grpc_port}, {workers} worker(s){tokens}{shadowing}; stop it with `mnist-kit stop`"
        )
        return
    shadowing = given(ctx, "shadow", "shadow_share")
    if shadowing:
        raise click.UsageError(
            f"{' and '.join(shadowing)} {'works' if len(shadowing) == 1 else 'work'} on the kserve runtime only "
            "(mnist-kit serve --runtime kserve --models mnist.mar,mnist-2.0.mar --shadow 2.0), where the shadow "
            "reads the default's decoded batch in the same worker; TorchServe's handler sees one version per worker, "
            "so it cannot run two versions on one decoded batch"
        )
    kserve_only = given(ctx, "archive", "http_port", "grpc_port", "workers")
    if kserve_only:
        raise click.UsageError(
            f"{' and '.join(kserve_only)} {'configures' if len(kserve_only) == 1 else 'configure'} the kserve runtime "
            "(--runtime kserve); TorchServe takes its "
            "archives, ports and workers from --ts-config (load_models, inference_address, default_workers_per_model) "
            "or --models"
        )
    if ts_config and profile != "local":
        raise click.UsageError("give --profile or --ts-config, not both: the profile names a TorchServe config")
    ts_config = (ts_config or root / config.ROOT_FILES[profile]).resolve()
    server = torchserve_launcher.HomeTorchServe(ts_config, root, models=models.split(",") if models else None)
    server.start(wait)  # one not ready in time is left running: `mnist-kit stop` stops it
    props = server.properties
    click.echo(
        f"TorchServe ready: inference {props.get('inference_address')}, management {server.management_url}, "
        f"metrics {props.get('metrics_address')}; stop it with `mnist-kit stop`"
    )


@cli.command()
@click.option(
    "--drain",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Keep serving this long first, for a proxy or load balancer to take the server out of rotation: the kserve "
    "runtime's readiness (/ping, /v2/health/ready) answers 503 meanwhile; TorchServe's cannot, so take it out of "
    "your proxy yourself.",
)
def stop(drain):
    """Stop the servers started from this machine's temp dir: TorchServe (as `torchserve --stop`) and its workers,
    and the kserve runtime, which first answers the requests it has received."""
    running = kserve_launcher.soft_stop() if drain else None
    if drain and (running or processes.live_pid(torchserve_launcher.pid_file())):
        click.echo(f"Draining for {drain:g} s (serving as usual; the kserve runtime's readiness says 503)...")
        time.sleep(drain)
    stopped = [
        ("TorchServe", torchserve_launcher.stop_server(key_file())),
        ("The kserve runtime", kserve_launcher.stop_server(key_file())),
    ]
    for name, pid in stopped:
        if pid is not None:
            click.echo(f"{name} (pid {pid}) stopped.")
    if all(pid is None for _, pid in stopped):
        click.echo("No server is running (neither TorchServe nor the kserve runtime).")
