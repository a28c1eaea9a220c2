"""The `mnist-kit` command line: one command per library function, and the only module that knows Click.

The library reports failures as KitError; KitErrors below turns them into one line and the error's exit code.
Default paths are relative to the kit's home (mnist_kit.paths), paths typed by the user to the current directory.
"""

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.paths import home


class KitErrors:
    """Every command's failures in one place: a KitError ends the command with its one-line message and exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KitError as e:
            error = click.ClickException(" ".join(str(e).split()))
            error.exit_code = e.exit_code
            raise error from None


class Command(KitErrors, click.Command):
    pass


class Group(KitErrors, click.Group):
    command_class = Command
    group_class = type  # subgroups are Groups too


def from_home(ctx, param, value):
    """A default path is relative to the kit's home; a path the user typed stays relative to where they are."""
    if value is not None and ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
        return home() / value
    return value


def path_option(*names, default, file_okay=True, dir_okay=True, **kwargs):
    return click.option(
        *names,
        default=default,
        show_default=True,
        callback=from_home,
        type=click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=Path),
        **kwargs,
    )


def key_file() -> Path:
    """Where TorchServe writes its tokens: the folder `mnist-kit serve` starts it in, the kit's home."""
    return home() / C.KEY_FILE


def data_dir_option(purpose: str):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"{purpose} Default: ${C.DATA_DIR_ENV}, else {C.DATA_DIR} in the kit's home.",
    )


token_option = click.option(
    "--token",
    envvar="MNIST_KIT_TOKEN",
    default=None,
    help=f"Inference token when token auth is on. Default: $MNIST_KIT_TOKEN, else {C.KEY_FILE} in the kit's home.",
)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mnist-kit")
def cli():
    """Train an MNIST digit classifier and serve it with TorchServe.

    \b
    The whole flow:
      mnist-kit train                  # checkpoints/mnist_sd.pt (+ metrics.json: accuracy, seconds)
      mnist-kit archive                # model_store/mnist.mar
      mnist-kit serve                  # checks, then torchserve --start --ts-config config.properties --ncs
      mnist-kit predict examples/digits/7.png
      mnist-kit stop
      mnist-kit export kserve deploy/kserve --storage-uri gs://BUCKET/mnist   # or: export k8s (a cluster)

    \b
    Default paths (checkpoints/, model_store/, config.properties, logs/, reports/) are relative to the
    kit's home: $MNIST_KIT_HOME, else the checkout mnist-kit is installed from, else the current
    directory; so every command works from any directory. Failures are one line (predict: one per file it
    could not read): exit 1, or 3 when the MNIST files are missing (2 is a usage error).
    """


@cli.command()
@data_dir_option("Folder with the four MNIST IDX files (.gz or raw).")
@click.option("--epochs", default=C.EPOCHS, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=C.TRAIN_BATCH_SIZE, show_default=True, type=click.IntRange(1))
@click.option(
    "--lr",
    default=C.LEARNING_RATE,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Peak learning rate of the one-cycle schedule (AdamW).",
)
@click.option("--seed", default=C.SEED, show_default=True, type=int, help="Same seed, same model (on CPU).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on the first N images only (quick runs).")
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random rotation, scale and shift of training digits.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="bf16 autocast for the training math (weights stay fp32); auto uses it where the CPU or GPU "
    "computes bf16 natively (AMX, AVX512-BF16, CUDA), where it is faster than fp32.",
)
@path_option(
    "--out", default=C.CHECKPOINT, dir_okay=False, help="Where to write the state_dict; metrics.json goes beside it."
)
@click.option("--force", is_flag=True, help="Overwrite an existing OUT (and the metrics.json beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
def train(data_dir, epochs, batch_size, lr, seed, limit, augment, device, precision, out, force, as_json):
    """Train the CNN on MNIST and save its state_dict.

    Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (raw or .gz), checks them against the published MD5s, prints test
    accuracy after each epoch, and writes OUT and metrics.json beside it (accuracy, seconds, versions).
    An existing OUT is refused before training starts, unless --force.
    """
    from mnist_kit import data, training

    bar = None

    def on_step(epoch, step, steps):
        nonlocal bar
        if step == 1:
            bar = click.progressbar(length=steps, label=f"epoch {epoch}/{epochs}")
        bar.update(1)
        if step == steps:
            bar.render_finish()

    def on_epoch(epoch, loss, accuracy):
        click.echo(f"epoch {epoch}/{epochs}: loss {loss:.4f}, test accuracy {accuracy:.2f} %")

    quiet = {} if as_json else {"on_step": on_step, "on_epoch": on_epoch}
    metrics = training.fit(
        data_dir or data.default_data_dir(),
        out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        limit=limit,
        device=device,
        augmentation=augment,
        precision=precision,
        force=force,
        **quiet,
    )
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        seconds = metrics["seconds"]
        click.echo(f"test accuracy {metrics['test_accuracy']:.2f} % after {epochs} epochs in {seconds:.0f} s")
        click.echo(f"wrote {out} and {out.parent / 'metrics.json'}")


@cli.command()
@path_option("--serialized-file", default=C.CHECKPOINT, dir_okay=False, help="The trained state_dict.")
@click.option("--model-name", default=C.MODEL_NAME, show_default=True)
@click.option(
    "--version",
    default=C.MODEL_VERSION,
    show_default=True,
    help="Model version; other than the default, the file is NAME-VERSION.mar so versions share a store.",
)
@path_option("--export-path", default=C.MODEL_STORE, file_okay=False)
@click.option(
    "--mode",
    type=click.Choice(["auto", "int8", "script", "eager"]),
    default="auto",
    show_default=True,
    help="auto: every serving form (int8, fp32 with and without oneDNN) that stays within 0.05 points of "
    "float test accuracy (needs the MNIST files); each worker times them on its CPU at start and serves the "
    "fastest. int8: quantised TorchScript alone. script: frozen fp32 TorchScript. eager: the state_dict "
    "with mnist_model.py.",
)
@click.option(
    "--serving-form",
    type=click.Choice(["auto", *C.SERVING_FORMS]),
    default="auto",
    show_default=True,
    help="With --mode auto: the form to serve whatever the timings (the environment variable "
    f"{C.SERVING_FORM_ENV} overrides it on a server).",
)
@data_dir_option("MNIST files for int8 calibration and checking.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=C.BATCH_SIZE,
    show_default=True,
    help="Most requests TorchServe hands the handler at once.",
)
@click.option(
    "--max-batch-delay",
    type=click.IntRange(1),
    default=C.MAX_BATCH_DELAY_MS,
    show_default=True,
    help="Milliseconds a lone request waits for company (TorchServe treats 0 as 100).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing archive.")
def archive(
    serialized_file, model_name, version, export_path, mode, serving_form, data_dir, batch_size, max_batch_delay, force
):
    """Pack the model into a TorchServe .mar archive.

    Checks that the weights load into MnistClassificationNet, converts them to the serving forms (--mode),
    then runs torch-model-archiver with the handler, the model, the worker package (mnist_kit/worker/)
    and a model-config.yaml with the batching settings.
    """
    from mnist_kit import archive as archiving

    path = archiving.build(
        serialized_file,
        export_path,
        model_name,
        version,
        force,
        mode,
        data_dir,
        batch_size,
        max_batch_delay,
        serving_form,
        log=click.echo,
    )
    click.echo(f"wrote {path}")


@cli.command()
@path_option(
    "--ts-config",
    default=C.TS_CONFIG,
    dir_okay=False,
    help="TorchServe configuration; config.production.properties turns tokens on.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=120,
    show_default=True,
    help="Seconds to wait for every model to have a ready worker.",
)
def serve(ts_config, wait):
    """Start TorchServe in the background, after checking what usually makes it fail.

    Says plainly when the model store has no archive (train and archive first), when a TorchServe is
    already running, or when a port is taken; then starts `torchserve --start --ts-config TS_CONFIG --ncs`
    in the kit's home and waits until the models answer. Logs go to logs/; stop it with `mnist-kit stop`.
    """
    from mnist_kit import client, server

    root, config = home(), ts_config.resolve()
    props = server.preflight(config, cwd=root)
    server.launch(config, root / C.LOGS / "torchserve.out", cwd=root)
    management = props.get("management_address", C.MANAGEMENT_URL)
    server.wait_ready(
        management, wait, root / C.LOGS / "ts_log.log", lambda: client.read_token(key_file(), api="management")
    )
    click.echo(
        f"TorchServe ready: inference {props.get('inference_address')}, management {management}, "
        f"metrics {props.get('metrics_address')}; stop it with `mnist-kit stop`"
    )


@cli.command()
def stop():
    """Stop the TorchServe started from this machine's temp dir (as `torchserve --stop`), and its workers."""
    from mnist_kit import server

    pid_file = server.pid_file_path()
    pid = server.live_pid(pid_file)
    if pid is None:
        click.echo("TorchServe is not running.")
        return
    server.stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    key_file().unlink(missing_ok=True)
    click.echo(f"TorchServe (pid {pid}) stopped.")


@cli.command(
    help=f"""Send IMAGES to a running TorchServe and print the digit each one shows.

    PNG, JPEG, BMP, GIF, WebP or TIFF in any colour mode, up to {C.MAX_IMAGE_PIXELS / 1e6:g} megapixels: photos,
    canvas exports and scans are cropped, scaled and centred by the server. Each file is sent with its image
    content type, unless it is over the server's max_request_size (read from --ts-config;
    {C.MAX_REQUEST_BYTES // 2**20} MiB in the kit's).

    Every file gets its line: `FILE: DIGIT (CONFIDENCE %)` on stdout, with the answer's flags in words (several
    digits, and which; not a digit; low confidence: below {C.LOW_CONFIDENCE:.0%}), or `FILE: error: ...` on stderr
    with the server's own message; the exit status is 1 when any file was not read. With --strict a picture that is
    not a digit is such an error (the server answers 422 to the {C.STRICT_HEADER} header). A failure of the server
    rather than of the file (not reachable, TLS, a token or https:// it wants) ends the command at once: every
    other file would fail the same way.

    \b
    Over HTTPS (a server with certificate_file and private_key_file):
      mnist-kit predict --url https://127.0.0.1:8443 --cacert tls.crt examples/digits/7.png
    """
)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="TorchServe inference address.")
@click.option("--model", default=C.MODEL_NAME, show_default=True, help="Model name, or NAME/VERSION.")
@click.option(
    "--token",
    envvar="MNIST_KIT_TOKEN",
    default=None,
    help="Inference token when token authorization is on. Default: $MNIST_KIT_TOKEN, else read from --key-file.",
)
@path_option(
    "--key-file",
    default=C.KEY_FILE,
    dir_okay=False,
    help="TorchServe's key file, written where the server was started.",
)
@path_option(
    "--ts-config",
    default=C.TS_CONFIG,
    dir_okay=False,
    help="The server's configuration: a file over its max_request_size is not sent "
    f"({C.MAX_REQUEST_BYTES // 2**20} MiB without the file).",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Retries, with exponential backoff from 0.1 s, when the server is unreachable or answers 503 "
    "(starting up, queue full) or 507 (a worker died mid-request).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Keep retrying for up to this many seconds (e.g. while the server starts).",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Verify an https:// server against this certificate (PEM): its own when self-signed, or its CA's. "
    "Default: the system's certificate authorities.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per file, in order, on stdout: the server\'s answer with "file", or '
    '{"file", "error", "status"}.',
)
@click.option("--strict", is_flag=True, help="A picture that is not a digit is an error, not an answer flagged so.")
def predict(images, url, model, token, key_file, ts_config, retries, wait, cacert, as_json, strict):
    from mnist_kit import client, server

    token = token or client.read_token(key_file)
    limit, source = server.max_request_size(ts_config)
    failed = 0
    for path in images:
        try:
            client.refuse_oversized(path, path.stat().st_size, limit, source)
            answer = client.predict(
                path.read_bytes(), url, model, token=token, retries=retries, wait=wait, cacert=cacert, strict=strict
            )
        except client.ClientError as e:
            if e.server_wide:
                raise
            failed += 1
            click.echo(json.dumps(failure_object(path, e)) if as_json else failure_line(path, e), err=not as_json)
        else:
            click.echo(json.dumps({"file": str(path), **answer}) if as_json else answer_line(path, answer))
    if failed:
        raise KitError(f"{failed} of {len(images)} files not read")


def answer_line(path, answer: dict) -> str:
    """How predict prints one file's answer: the digit, its confidence, and the flags in words after it."""
    from mnist_kit.reading import flag_words

    said = flag_words(answer.get("flags", []), answer.get("digits"))
    return f"{path}: {answer['digit']} ({100 * answer['confidence']:.1f} %)" + (f": {said}" if said else "")


def failure_line(path, error) -> str:
    """How predict prints a file it could not read: the server's own message, after the status it answered with."""
    status = f"HTTP {error.status}: " if error.status else ""
    return f"{path}: error: {status}{error.detail}"


def failure_object(path, error) -> dict:
    """A file predict could not read, for --json: status is the HTTP status, null when the server answered none."""
    return {"file": str(path), "error": error.detail, "status": error.status}


@cli.command()
@path_option(
    "--checkpoint",
    default=C.CHECKPOINT,
    dir_okay=False,
    help="The state_dict to evaluate in this process (ignored with --url).",
)
@click.option("--url", default=None, help="Evaluate a live TorchServe instead, sending each test image as a PNG.")
@token_option
@data_dir_option("Folder with the MNIST files.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N test images.")
@path_option("--out", default=C.REPORTS, file_okay=False)
@click.option(
    "--real-world",
    is_flag=True,
    help="Accuracy on held-out images shaped the way people send digits (canvas, photo, tight crop, …), "
    "through the serving preprocessing; writes OUT/real_world.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the summary.")
def evaluate(checkpoint, url, token, data_dir, limit, out, real_world, as_json):
    """Measure accuracy on the MNIST test set, per digit, with pictures.

    Writes OUT/evaluation.json (accuracy, per-digit precision and recall, confusion matrix),
    OUT/confusion_matrix.png and OUT/misclassified.png (the most confidently wrong images).
    With --url it checks what is served: every image goes through HTTP and the handler.
    With --real-world it measures the checkpoint on the kinds of images of the README's table instead.
    """
    from mnist_kit import client, data
    from mnist_kit import evaluate as evaluation

    images, labels = data.load(data_dir or data.default_data_dir(), "test")
    images, labels = images[:limit], labels[:limit]
    if real_world:
        results = evaluation.real_world(checkpoint, images, labels)
        path = evaluation.write_real_world(results, checkpoint, out)
        if as_json:
            click.echo(path.read_text())
            return
        click.echo("kind          images  accuracy  flagged  several_digits  not_a_digit  digits_read")

        def cell(r, key, width):
            return f"{r[key]:>{width - 2}.2f} %" if key in r else " " * width

        for kind, r in results.items():
            click.echo(
                f"{kind:<12}  {r['images']:>6}  {cell(r, 'accuracy', 8)}  {cell(r, 'flagged', 7)}  "
                f"{cell(r, 'several_digits', 14)}  {cell(r, 'not_a_digit', 11)}  {cell(r, 'digits_read', 11)}"
            )
        click.echo("flagged: several_digits or not_a_digit (on digits, false alarms)")
        click.echo(f"wrote {path}")
        return
    if url:
        token = token or client.read_token(key_file())
        with click.progressbar(length=len(images), label=f"evaluating {url}", file=sys.stderr) as bar:
            probabilities = evaluation.predict_endpoint(url, images, token, on_result=lambda: bar.update(1))
    else:
        probabilities = evaluation.predict_checkpoint(checkpoint, images)
    summary = evaluation.summarize(probabilities, labels.numpy())
    paths = evaluation.write_reports(summary, probabilities, labels.numpy(), images.numpy(), out)
    if as_json:
        click.echo(paths["json"].read_text())
        return
    click.echo(
        f"{url or checkpoint}: {summary['accuracy']:.2f} % of {summary['images']} test images "
        f"({summary['errors']} errors)"
    )
    click.echo("digit  precision  recall")
    for d, r in summary["per_digit"].items():
        click.echo(f"{d:>5}  {r['precision']:>8.2f}  {r['recall']:>6.2f}")
    click.echo(f"wrote {paths['json']}, {paths['confusion']} and {paths['misclassified']}")


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@path_option("--out", default="explain.png", dir_okay=False)
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="TorchServe inference address.")
@click.option("--model", default=C.MODEL_NAME, show_default=True)
@token_option
def explain(image, out, url, model, token):
    """Show which pixels made the served model read IMAGE as its digit.

    Asks /explanations/MODEL for Integrated Gradients attributions and writes OUT: the 28×28 input the
    model saw, with pixels that pushed towards the digit in red and against it in blue.
    """
    from mnist_kit import client
    from mnist_kit import explain as explaining

    answer = client.explain(image.read_bytes(), url=url, model=model, token=token or client.read_token(key_file()))
    explaining.overlay(answer, out, title=f"{image.name}: read as {answer['digit']}")
    click.echo(f"{image}: {answer['digit']}; wrote {out}")


@cli.group()
@click.option("--url", default=C.MANAGEMENT_URL, show_default=True, help="TorchServe management address.")
@click.option(
    "--token",
    envvar="MNIST_KIT_MANAGEMENT_TOKEN",
    default=None,
    help=f"Management token when token auth is on. Default: read from {C.KEY_FILE} in the kit's home.",
)
@click.pass_context
def models(ctx, url, token):
    """Manage the models a running TorchServe serves (its management API).

    \b
      mnist-kit models list
      mnist-kit models describe mnist
      mnist-kit models set-default mnist 2.0      # A/B: switch the default version live
      mnist-kit models scale mnist --workers 4
      mnist-kit models register mnist-2.0.mar     # needs enable_model_api=true
    """
    from mnist_kit import client

    ctx.obj = {"url": url.rstrip("/"), "token": token or client.read_token(key_file(), api="management")}


def _management(ctx, method: str, path: str) -> dict:
    from mnist_kit import client

    try:
        body = client.request(f"{ctx.obj['url']}{path}", method=method, token=ctx.obj["token"])
    except client.ClientError as e:
        if e.status == 405 and method in ("POST", "DELETE"):
            raise KitError(
                "registering and unregistering models over HTTP is off: set "
                "enable_model_api=true in the server's config.properties to allow it"
            ) from None
        raise
    return json.loads(body)


@models.command("list")
@click.pass_context
def models_list(ctx):
    """The registered models and their archives."""
    for model in _management(ctx, "GET", "/models")["models"]:
        click.echo(f"{model['modelName']}  ({model['modelUrl']})")


@models.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def describe(ctx, name, as_json):
    """Every version of NAME: batching, workers and their status, and the serving form its workers chose."""
    from mnist_kit import client

    versions = _management(ctx, "GET", f"/models/{name}/all")
    description, custom = client.described(ctx.obj["url"], name, ctx.obj["token"])
    default = description["modelVersion"]
    if as_json:
        for v in versions:
            if v["modelVersion"] == default:
                v["servingForm"] = custom or None
        click.echo(json.dumps(versions, indent=2))
        return
    for v in versions:
        workers = ", ".join(f"{w['pid']} {w['status']}" for w in v["workers"]) or "none"
        mark = " (default)" if v["modelVersion"] == default else ""
        click.echo(
            f"{v['modelName']} {v['modelVersion']}{mark}: {v['modelUrl']}, batch {v['batchSize']} / "
            f"{v['maxBatchDelay']} ms, workers {v['minWorkers']}-{v['maxWorkers']}: {workers}"
        )
    if "serving_form" in custom:
        click.echo(f"{name} {default} serves {custom['serving_form']}: {custom['reason']}")


@models.command()
@click.argument("name")
@click.option("--workers", type=click.IntRange(0), required=True, help="Number of workers to run.")
@click.option("--version", default=None, help="A version other than the default.")
@click.pass_context
def scale(ctx, name, workers, version):
    """Run exactly WORKERS workers for NAME (waits until they are up)."""
    path = f"/models/{name}" + (f"/{version}" if version else "")
    click.echo(_management(ctx, "PUT", f"{path}?min_worker={workers}&max_worker={workers}&synchronous=true")["status"])


@models.command("set-default")
@click.argument("name")
@click.argument("version")
@click.pass_context
def set_default(ctx, name, version):
    """Make VERSION what /predictions/NAME answers with, without a restart."""
    click.echo(_management(ctx, "PUT", f"/models/{name}/{version}/set-default")["status"])


@models.command()
@click.argument("archive")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True)
@click.pass_context
def register(ctx, archive, workers):
    """Register ARCHIVE (a .mar in the server's model store) and start its workers."""
    from urllib.parse import quote

    click.echo(
        _management(ctx, "POST", f"/models?url={quote(archive)}&initial_workers={workers}&synchronous=true")["status"]
    )


@models.command()
@click.argument("name")
@click.argument("version", required=False)
@click.pass_context
def unregister(ctx, name, version):
    """Unregister NAME (or one VERSION of it) and stop its workers."""
    click.echo(_management(ctx, "DELETE", f"/models/{name}" + (f"/{version}" if version else ""))["status"])


@cli.command()
@path_option("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar", dir_okay=False, help="The archive to serve.")
@click.option("--concurrency", default="1,8,32,64", show_default=True, help="Comma-separated connection counts.")
@click.option("--seconds", type=click.FloatRange(1), default=10, show_default=True, help="Load time per point.")
@path_option(
    "--out",
    default=f"{C.REPORTS}/bench",
    dir_okay=False,
    help="Writes OUT.json (every figure) and OUT.png (throughput and p99 against concurrency).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of the table.")
@click.option(
    "--markdown",
    "markdown_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run nothing: print the Markdown tables of docs/PERFORMANCE.md from this bench JSON file "
    "(e.g. reports/bench.json).",
)
@click.option(
    "--into",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --markdown: replace the bench block of this file that names the JSON file, instead of printing.",
)
def bench(archive, concurrency, seconds, out, as_json, markdown_from, into):
    """Load-test the served model against the serving stack's own ceiling.

    \b
    Starts a private TorchServe (free ports) with ARCHIVE and another with a no-op handler (no decoding,
    no model) under the same settings: the most TorchServe itself can do here. Measures each one's cold
    start (torchserve --start to the first prediction), warms both up for SECONDS at the highest
    concurrency, then at each concurrency drives one, then the other, with wrk: req/s, p50/p90/p99,
    errors; the ratio says how close the kit gets to the ceiling. The kit is also driven with the same
    image as an Open Inference Protocol (v2) request, one base64 BYTES element, to show the protocol's
    cost. Also times preprocessing per image type (and its decoding alone), and in process a lone
    request's own work, back to back and after the core idles 3 ms: what lone requests pay beyond the
    no-op's. Run it on an otherwise idle machine; about 3 × (5 × SECONDS + 10) seconds.

    \b
    The tables of docs/PERFORMANCE.md come from such runs' JSON, one file per CPU kind, never retyped:
      cp reports/bench.json docs/bench/amd-epyc-avx2.json
      mnist-kit bench --markdown docs/bench/amd-epyc-avx2.json --into docs/PERFORMANCE.md
    """
    from mnist_kit import bench as benchmark
    from mnist_kit import bench_tables

    if into and not markdown_from:
        raise click.UsageError("--into goes with --markdown")
    if markdown_from:
        result = bench_tables.load(markdown_from)
        if into:
            bench_tables.write_markdown(result, into, markdown_from)
            click.echo(f"rewrote the bench tables of {into} from {markdown_from}")
        else:
            click.echo(bench_tables.markdown(result))
        return
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter(
            "use numbers separated by commas, e.g. 1,8,32,64", param_hint="--concurrency"
        ) from None
    result = benchmark.run(archive, levels, seconds, progress=lambda m: click.echo(m, err=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    benchmark.plot(result, png_path)
    click.echo(json.dumps(result, indent=2) if as_json else benchmark.report(result))
    if not as_json:
        click.echo(f"wrote {json_path} and {png_path}")


@cli.group()
def export():
    """Write what a cluster needs to serve the model: KServe, or plain Kubernetes.

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
    whole or not at all, and replaced only with --force. The README's "Deploying" section has the next steps.
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
@export_options
def kserve(
    out,
    storage_uri,
    image,
    scale_metric,
    scale_target,
    model_store,
    bench_report,
    name,
    cpus,
    memory_mib,
    min_replicas,
    max_replicas,
    force,
):
    """The KServe model storage layout in OUT, and OUT/inferenceservice.yaml.

    \b
    The InferenceService (serving.kserve.io/v1beta1) uses KServe's TorchServe runtime (modelFormat pytorch)
    with the Open Inference Protocol (protocolVersion v2) and the kit's image, reading the model from
    --storage-uri:
      mnist-kit export kserve deploy/kserve --storage-uri gs://my-bucket/mnist
      gsutil cp -r deploy/kserve/config deploy/kserve/model-store gs://my-bucket/mnist/
      kubectl apply -f deploy/kserve/inferenceservice.yaml
    """
    from mnist_kit import deploy

    result = deploy.export_kserve(
        out,
        storage_uri,
        model_store,
        bench_report,
        name,
        image,
        cpus,
        memory_mib,
        scale_target,
        scale_metric,
        min_replicas,
        max_replicas,
        force,
    )
    _report_export(result)
    click.echo(
        f"next: upload {out}/config and {out}/model-store to {storage_uri}, "
        f"then kubectl apply -f {out}/inferenceservice.yaml"
    )


@export.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--image",
    default=None,
    help="The image with the model baked in (Dockerfile target `model`, built from OUT when it lies under the "
    "checkout's deploy/), as your cluster pulls it. Default: mnist-kit-serving:VERSION-model.",
)
@export_options
def k8s(out, image, model_store, bench_report, name, cpus, memory_mib, min_replicas, max_replicas, force):
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
    from mnist_kit import deploy

    result = deploy.export_k8s(
        out, model_store, bench_report, name, image, cpus, memory_mib, min_replicas, max_replicas, force
    )
    _report_export(result)
    context = home()
    layout = deploy.image_layout(out, context)
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
        f"next: {copy}build and push the image with the model (podman build --target model "
        f"--build-arg LAYOUT={layout} -t {result.image} {context}), then kubectl apply -f {out}/kubernetes.yaml"
    )


def reader_options(command):
    """--url, --model, --management-url and --token: which TorchServe a pad asks, and how."""
    for option in reversed(
        [
            click.option("--url", default=C.INFERENCE_URL, show_default=True, help="TorchServe inference address."),
            click.option("--model", default=C.MODEL_NAME, show_default=True, help="Model name, or NAME/VERSION."),
            click.option(
                "--management-url",
                default=C.MANAGEMENT_URL,
                show_default=True,
                help="TorchServe management address, asked which version answers (optional: without it the "
                "version shows as unknown).",
            ),
            token_option,
        ]
    ):
        command = option(command)
    return command


def make_reader(url, model, management_url, token):
    """Tokens are read at each request, from --token or the key file TorchServe rewrites at every start."""
    from mnist_kit import client
    from mnist_kit.reading import Reader

    return Reader(
        url,
        model,
        management_url,
        token=lambda: token or client.read_token(key_file()),
        management_token=lambda: client.read_token(key_file(), api="management"),
    )


@cli.command()
@click.option(
    "--port",
    default=C.UI_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the page, on 127.0.0.1 only (0: any free port).",
)
@reader_options
@click.option("--no-browser", is_flag=True, help="Print the page's address instead of opening a browser on it.")
def ui(port, url, model, management_url, token, no_browser):
    """Draw digits in the browser and watch the served model read them as you draw.

    \b
      mnist-kit serve          # TorchServe with model_store/mnist.mar
      mnist-kit ui             # http://127.0.0.1:8000 in your browser; Ctrl+C stops it

    \b
    The page: a pad for mouse, pen or finger (brush width, undo, clear; Esc and Ctrl+Z too), the
    prediction while you draw with the ten probabilities, the 28×28 picture the model saw (made with the
    kit's own preprocessing) and, on request, the Integrated Gradients heat map from /explanations. Drop
    or pick an image file to see how a photo or scan is read. The page's small server forwards its
    /api/... to TorchServe, so TorchServe needs no CORS opening; with the production profile the token
    is read here, as `mnist-kit predict` does, and never sent to the browser. No internet needed.
    """
    import webbrowser

    from mnist_kit.ui.server import PadServer

    server = PadServer(make_reader(url, model, management_url, token), port)
    click.echo(f"Drawing pad at {server.url} (asking TorchServe at {url}); Ctrl+C stops it.")
    if not no_browser and not webbrowser.open(server.url):
        click.echo("(no browser found to open it: open the address above yourself)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@reader_options
def pad(url, model, management_url, token):
    """The drawing pad as a desktop window (PyQt5): draw a digit, watch the served model read it.

    \b
      mnist-kit serve          # TorchServe with model_store/mnist.mar
      mnist-kit pad            # Esc clears, Ctrl+Z undoes

    \b
    The same pad as `mnist-kit ui`: the prediction as you draw, the ten probabilities as bars, and the
    28×28 picture the model saw. Needs the desktop extra: pip install -e ".[desktop]" (scripts/setup.sh
    installs it).
    """
    from mnist_kit.ui import desktop

    desktop.run(make_reader(url, model, management_url, token))
