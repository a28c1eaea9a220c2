"""Commands that ask a running TorchServe, from outside it: send it images (predict), manage its models (models)."""

import json
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, key_file, path_option
from mnist_kit.errors import KitError
from mnist_kit.serving import client
from mnist_kit.serving.torchserve import config, management


@cli.command(
    help=f"""Send IMAGES to a running TorchServe and print the digit each one shows.

    PNG, JPEG, BMP, GIF, WebP or TIFF in any colour mode, up to {C.MAX_IMAGE_PIXELS / 1e6:g} megapixels: photos,
    canvas exports and scans are cropped, scaled and centred by the process. Each file is sent with its image
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
    envvar=C.TOKEN_ENV,
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
    help="Retries, with jittered exponential backoff from 0.1 s, when the connection fails or is reset or the "
    "server answers 503 (starting up, queue full) or 507 (a worker died mid-request); never for bad input (4xx).",
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
@click.option("--verbose", "-v", is_flag=True, help="Say on stderr each retry: after what, and how long it waits.")
def predict(images, url, model, token, key_file, ts_config, retries, wait, cacert, as_json, strict, verbose):
    token = token or client.read_token(key_file)
    limit, source = config.max_request_size(ts_config)
    failed = 0
    for path in images:
        try:
            client.refuse_oversized(path, path.stat().st_size, limit, source=source)
            answer = client.predict(
                path.read_bytes(),
                url,
                model,
                token=token,
                retries=retries,
                wait=wait,
                cacert=cacert,
                strict=strict,
                on_retry=retry_reporter(path) if verbose else None,
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


def retry_reporter(path):
    def report(attempt: int, error, delay: float) -> None:
        click.echo(f"{path}: retry {attempt} in {delay:.2f} s after: {error}", err=True)

    return report


def answer_line(path, answer: dict) -> str:
    """How predict prints one file's answer: the digit, its confidence, and the flags in words after it."""
    from mnist_kit.ui.pad_client import flag_words

    said = flag_words(answer.get("flags", []), answer.get("digits"))
    return f"{path}: {answer['digit']} ({100 * answer['confidence']:.1f} %)" + (f": {said}" if said else "")


def failure_line(path, error) -> str:
    """How predict prints a file it could not read: the server's own message, after the status it answered with."""
    status = f"HTTP {error.status}: " if error.status else ""
    return f"{path}: error: {status}{error.detail}"


def failure_object(path, error) -> dict:
    """A file predict could not read, for --json: status is the HTTP status, null when the server answered none."""
    return {"file": str(path), "error": error.detail, "status": error.status}


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
    ctx.obj = management.Management(url, token or client.read_token(key_file(), api="management"))


@models.command("list")
@click.pass_context
def models_list(ctx):
    """The registered models and their archives."""
    for model in ctx.obj.models():
        click.echo(f"{model['modelName']}  ({model['modelUrl']})")


@models.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def describe(ctx, name, as_json):
    """Every version of NAME: batching, workers and their status, and the serving form its workers chose."""
    versions = ctx.obj.versions(name)
    description, custom = client.described(ctx.obj.url, name, ctx.obj.token)
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
        loaded = {"ONNX Runtime": custom.get("onnxruntime"), "torch": custom.get("torch")}
        click.echo("  loaded in its workers: " + ", ".join(f"{n} {v or '(not imported)'}" for n, v in loaded.items()))


@models.command()
@click.argument("name")
@click.option("--workers", type=click.IntRange(0), required=True, help="Number of workers to run.")
@click.option("--version", default=None, help="A version other than the default.")
@click.pass_context
def scale(ctx, name, workers, version):
    """Run exactly WORKERS workers for NAME (waits until they are up)."""
    click.echo(ctx.obj.scale(name, workers, version))


@models.command("set-default")
@click.argument("name")
@click.argument("version")
@click.pass_context
def set_default(ctx, name, version):
    """Make VERSION what /predictions/NAME answers with, without a restart."""
    click.echo(ctx.obj.set_default(name, version))


@models.command()
@click.argument("archive")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True)
@click.pass_context
def register(ctx, archive, workers):
    """Register ARCHIVE (a .mar in the server's model store) and start its workers."""
    click.echo(ctx.obj.register(archive, workers))


@models.command()
@click.argument("name")
@click.argument("version", required=False)
@click.pass_context
def unregister(ctx, name, version):
    """Unregister NAME (or one VERSION of it) and stop its workers."""
    click.echo(ctx.obj.unregister(name, version))
