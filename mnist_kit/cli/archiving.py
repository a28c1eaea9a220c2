"""Packaging: `mnist-kit archive`, the trained state_dict into a TorchServe .mar."""

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, data_dir_option, path_option


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
    type=click.Choice(["auto", "int8", "onnx", "eager"]),
    default="auto",
    show_default=True,
    help="auto: every serving form (ONNX int8 and fp32 on ONNX Runtime, the float network in PyTorch with and "
    "without oneDNN) that stays within --max-accuracy-drop of float test accuracy (needs the MNIST files); each "
    "worker times those it can load on its CPU at start and serves the fastest. int8: the ONNX int8 form alone. "
    "onnx: the ONNX fp32 form alone. eager: the state_dict with mnist_model.py.",
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
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0),
    default=C.MAX_ACCURACY_DROP,
    show_default=True,
    help="Points of MNIST test accuracy a converted form may lose against float: more, and --mode auto leaves "
    "it out, --mode int8 refuses.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing archive.")
def archive(
    serialized_file,
    model_name,
    version,
    export_path,
    mode,
    serving_form,
    data_dir,
    batch_size,
    max_batch_delay,
    max_accuracy_drop,
    force,
):
    """Pack the model into a TorchServe .mar archive.

    Checks that the weights load into MnistClassificationNet, exports them to the serving forms (--mode:
    torch.export to ONNX, ONNX Runtime's int8 quantisation) with a labelled sample each worker checks its int8
    form on, then runs torch-model-archiver with the handler, the model, the worker package (mnist_kit/worker/)
    and a model-config.yaml with the batching settings.
    """
    from mnist_kit.packaging.archive import build

    path = build(
        serialized_file,
        export_path,
        model_name,
        version=version,
        force=force,
        mode=mode,
        data_dir=data_dir,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay,
        serving_form=serving_form,
        max_accuracy_drop=max_accuracy_drop,
        log=click.echo,
    )
    click.echo(f"wrote {path}")
