"""The `mnist-kit` command line: one command per library function, and the only module that knows Click.

The library reports failures as KitError; KitErrors below turns them into one line and the error's exit code.
Default paths are relative to the kit's home (mnist_kit.paths), paths typed by the user to the current directory.
"""

from pathlib import Path

import click
from click.core import ParameterSource

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.paths import home

# The extra that installs each optional module the commands import (pyproject.toml): the base install is the client
# and the torch-free serving core.
EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "captum": "train",
    "matplotlib": "train",
    "model_archiver": "train",
    "ts": "torchserve",
    "kserve": "kserve",
    "PyQt5": "desktop",
}


class KitErrors:
    """Every command's failures in one place: a KitError ends the command with its one-line message and exit code; a
    missing optional module, with the extra that installs it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KitError as e:
            error = click.ClickException(" ".join(str(e).split()))
            error.exit_code = e.exit_code
            raise error from None
        except ModuleNotFoundError as e:
            extra = EXTRAS.get((e.name or "").split(".")[0])
            if extra is None:
                raise
            raise click.ClickException(
                f"this command needs {e.name}, which is not installed here: pip install 'mnist-kit[{extra}]'"
            ) from None


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


def given(ctx, *names: str) -> list[str]:
    """The options among `names` (parameter names) that the user set, as they are spelt on the command line."""
    params = {p.name: p for p in ctx.command.params}
    return [
        "/".join(params[n].opts + params[n].secondary_opts)
        for n in names
        if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)
    ]


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
    envvar=C.TOKEN_ENV,
    default=None,
    help=f"Inference token when token auth is on. Default: $MNIST_KIT_TOKEN, else {C.KEY_FILE} in the kit's home.",
)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mnist-kit")
def cli():
    """Train an MNIST digit classifier and serve it with TorchServe, or KServe's ModelServer.

    \b
    The whole flow:
      mnist-kit train                  # checkpoints/mnist_sd.pt (+ metrics.json: accuracy, seconds)
      mnist-kit archive                # model_store/mnist.mar
      mnist-kit serve                  # checks, then torchserve --start --ts-config config.properties --ncs
                                       # (--runtime kserve: the same archive on KServe's ModelServer, no Java)
      mnist-kit predict examples/digits/7.png
      mnist-kit stop
      mnist-kit export kserve deploy/kserve --storage-uri gs://BUCKET/mnist   # or: export k8s (a cluster)
      mnist-kit image build --target kserve   # the serving image, with podman or docker

    \b
    Default paths (checkpoints/, model_store/, config.properties, logs/, reports/) are relative to the
    kit's home: $MNIST_KIT_HOME, else the checkout mnist-kit is installed from, else the current
    directory; so every command works from any directory. Failures are one line (predict: one per file it
    could not read): exit 1, or 3 when the MNIST files are missing (2 is a usage error).
    """
