"""The `mnist-kit` command line: one command per function, each a thin layer over the module that does the work."""

import json
from pathlib import Path

import click

import mnist_constants as C


class DataMissing(click.ClickException):
    """Exit code 2: the data set is not where it was looked for."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mnist-kit")
def cli():
    """Train an MNIST digit classifier and serve it with TorchServe.

    \b
    The whole flow, from the repo root:
      mnist-kit train                  # checkpoints/mnist_sd.pt, ~3 min on 2 CPU cores
      mnist-kit archive                # model_store/mnist.mar
      torchserve --start --ts-config config.properties --ncs
      mnist-kit predict examples/digits/7.png
      torchserve --stop
    """


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Folder with the four MNIST IDX files (.gz or raw). Default: ${C.DATA_DIR_ENV} or {C.DATA_DIR}.")
@click.option("--epochs", default=6, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Peak learning rate of the one-cycle schedule (AdamW).")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same model (on CPU).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on the first N images only (quick runs).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random rotation, scale and shift of training digits.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="bf16 autocast for the training math (weights stay fp32); auto uses it where the CPU or GPU "
                   "computes bf16 natively, about twice as fast on CPUs with AMX.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=C.CHECKPOINT, show_default=True,
              help="Where to write the state_dict; metrics.json goes beside it.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
def train(data_dir, epochs, batch_size, lr, seed, limit, augment, device, precision, out, as_json):
    """Train the CNN on MNIST and save its state_dict.

    Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (raw or .gz), checks them against the published MD5s, prints test
    accuracy after each epoch, and writes OUT and metrics.json beside it.
    """
    import mnist_data
    import train as training

    try:
        metrics = training.fit(data_dir or mnist_data.default_data_dir(), out, epochs=epochs, batch_size=batch_size,
                               lr=lr, seed=seed, limit=limit, device=device, augmentation=augment,
                               precision=precision, progress=not as_json)
    except mnist_data.DataError as e:
        raise DataMissing(str(e))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(f"test accuracy {metrics['test_accuracy']:.2f} % after {epochs} epochs in {metrics['seconds']:.0f} s")
        click.echo(f"wrote {out} and {out.parent / 'metrics.json'}")


@cli.command()
@click.option("--serialized-file", type=click.Path(dir_okay=False, path_type=Path), default=C.CHECKPOINT,
              show_default=True, help="The trained state_dict.")
@click.option("--model-name", default=C.MODEL_NAME, show_default=True)
@click.option("--version", default=C.MODEL_VERSION, show_default=True,
              help="Model version; other than the default, the file is NAME-VERSION.mar so versions share a store.")
@click.option("--export-path", type=click.Path(file_okay=False, path_type=Path), default=C.MODEL_STORE,
              show_default=True)
@click.option("--mode", type=click.Choice(["int8", "script", "eager"]), default="int8", show_default=True,
              help="int8: quantised TorchScript, about 8× faster than eager, kept only within 0.05 points of "
                   "float test accuracy (needs the MNIST files). script: frozen fp32 TorchScript. eager: the "
                   "state_dict with mnist_model.py.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"MNIST files for int8 calibration and checking. Default: ${C.DATA_DIR_ENV} or {C.DATA_DIR}.")
@click.option("--batch-size", type=click.IntRange(1), default=C.BATCH_SIZE, show_default=True,
              help="Most requests TorchServe hands the handler at once.")
@click.option("--max-batch-delay", type=click.IntRange(1), default=C.MAX_BATCH_DELAY_MS, show_default=True,
              help="Milliseconds a lone request waits for company (TorchServe treats 0 as 100).")
@click.option("--force", is_flag=True, help="Overwrite an existing archive.")
def archive(serialized_file, model_name, version, export_path, mode, data_dir, batch_size, max_batch_delay, force):
    """Pack the model into a TorchServe .mar archive.

    Checks that the weights load into MnistClassificationNet, converts them to the serving form (--mode),
    then runs torch-model-archiver with the handler, the model, the shared preprocessing and a
    model-config.yaml with the batching settings.
    """
    import mnist_archive

    try:
        path = mnist_archive.build(serialized_file, export_path, model_name, version, force, mode, data_dir,
                                   batch_size, max_batch_delay, log=click.echo)
    except mnist_archive.ArchiveError as e:
        raise click.ClickException(str(e))
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--ts-config", type=click.Path(dir_okay=False, path_type=Path), default="config.properties",
              show_default=True, help="TorchServe configuration; config.production.properties turns tokens on.")
@click.option("--wait", type=click.FloatRange(0), default=120, show_default=True,
              help="Seconds to wait for every model to have a ready worker.")
def serve(ts_config, wait):
    """Start TorchServe in the background, after checking what usually makes it fail.

    Says plainly when the model store has no archive (train and archive first), when a TorchServe is
    already running, or when a port is taken; then starts `torchserve --start --ts-config TS_CONFIG --ncs`
    and waits until the models answer. Logs go to logs/; stop it with `mnist-kit stop`.
    """
    import subprocess
    import sys

    import mnist_server

    try:
        props = mnist_server.preflight(ts_config)
        launcher = [sys.executable, "-m", "ts.model_server", "--start", "--ts-config", str(ts_config), "--ncs"]
        # Java inherits the launcher's output: a pipe would never close, so it goes to a file.
        Path("logs").mkdir(exist_ok=True)
        with open("logs/torchserve.out", "w") as out:
            result = subprocess.run(launcher, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise mnist_server.ServerError(f"torchserve --start failed: {_tail(Path('logs/torchserve.out'))}")
        management = props.get("management_address", C.MANAGEMENT_URL)
        mnist_server.wait_ready(management, wait, lambda: mnist_server.read_key(".", "management"),
                                log_tail=lambda: _tail(Path("logs/ts_log.log")))
    except mnist_server.ServerError as e:
        raise click.ClickException(str(e))
    click.echo(f"TorchServe ready: inference {props.get('inference_address')}, management {management}, "
               f"metrics {props.get('metrics_address')}; stop it with `mnist-kit stop`")


@cli.command()
def stop():
    """Stop the TorchServe started from this machine's temp dir (as `torchserve --stop`), and its workers."""
    import mnist_server

    pid_file = mnist_server.pid_file_path()
    pid = mnist_server._live_pid(pid_file)
    if pid is None:
        click.echo("TorchServe is not running.")
        return
    mnist_server.stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    Path(C.KEY_FILE).unlink(missing_ok=True)
    click.echo(f"TorchServe (pid {pid}) stopped.")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="TorchServe inference address.")
@click.option("--model", default=C.MODEL_NAME, show_default=True, help="Model name, or NAME/VERSION.")
@click.option("--token", envvar="MNIST_KIT_TOKEN", default=None,
              help=f"Inference token when token authorization is on. Default: $MNIST_KIT_TOKEN, else read from "
                   f"./{C.KEY_FILE}.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=C.KEY_FILE, show_default=True,
              help="TorchServe's key file, written where the server was started.")
@click.option("--retries", type=click.IntRange(0), default=3, show_default=True,
              help="Retries, with exponential backoff from 0.1 s, when the server is unreachable or answers 503 "
                   "(starting up, a worker restarting, queue full).")
@click.option("--wait", type=click.FloatRange(0), default=0, show_default=True,
              help="Keep retrying for up to this many seconds (e.g. while the server starts).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answers, one object per line.")
def predict(images, url, model, token, key_file, retries, wait, as_json):
    """Send IMAGES to a running TorchServe and print the digit each one shows.

    PNG, JPEG, BMP, GIF, WebP or TIFF, any size and colour mode: photos, canvas exports and scans are
    cropped, scaled and centred by the server. Each file is sent with its image content type.
    """
    import mnist_client

    try:
        token = token or mnist_client.read_token(key_file)
        for path in images:
            answer = mnist_client.predict(path.read_bytes(), url=url, model=model, token=token, retries=retries,
                                            wait=wait)
            if as_json:
                click.echo(json.dumps({"file": str(path), **answer}))
            else:
                click.echo(f"{path}: {answer['digit']} ({100 * answer['confidence']:.1f} %)")
    except mnist_client.ClientError as e:
        raise click.ClickException(str(e))


@cli.command()
@click.option("--archive", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path(C.MODEL_STORE) / f"{C.MODEL_NAME}.mar", show_default=True, help="The archive to serve.")
@click.option("--concurrency", default="1,8,32,64", show_default=True, help="Comma-separated connection counts.")
@click.option("--seconds", type=click.FloatRange(1), default=10, show_default=True, help="Load time per point.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="reports/bench", show_default=True,
              help="Writes OUT.json (every figure) and OUT.png (throughput and p99 against concurrency).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of the table.")
def bench(archive, concurrency, seconds, out, as_json):
    """Load-test the served model against the serving stack's own ceiling.

    \b
    Starts a private TorchServe (free ports) with ARCHIVE, measures its cold start (torchserve --start
    to the first prediction), then drives it with wrk at each concurrency: req/s, p50/p90/p99, errors.
    Then does the same with a no-op handler (no decoding, no model) and the same batching settings: the
    most TorchServe itself can do here; the ratio says how close the kit gets. Also times preprocessing
    per image type. Run it on an otherwise idle machine; about 2 × (4 × SECONDS + 10) seconds.
    """
    import mnist_bench

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter("use numbers separated by commas, e.g. 1,8,32,64", param_hint="--concurrency")
    try:
        result = mnist_bench.run(archive, levels, seconds, progress=lambda m: click.echo(m, err=True))
    except RuntimeError as e:
        raise click.ClickException(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    mnist_bench.plot(result, png_path)
    click.echo(json.dumps(result, indent=2) if as_json else mnist_bench.report(result))
    if not as_json:
        click.echo(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    cli()
