"""The drawing pads: `mnist-kit ui` (a web page) and `mnist-kit pad` (a desktop window)."""

from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, key_file, token_option


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
    from mnist_kit.serving import client
    from mnist_kit.ui.pad_client import Reader

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
@click.option(
    "--shadow-db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The shadow's disagreements that /review labels. Default: {C.SHADOW_DB} in the kit's home.",
)
@click.option("--no-browser", is_flag=True, help="Print the page's address instead of opening a browser on it.")
def ui(port, url, model, management_url, token, shadow_db, no_browser):
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

    \b
    At /review, the pictures a shadow version read otherwise than the default
    (serve --runtime kserve --shadow VERSION), one at a time with both answers:
    keys 0-9 label one, n says it is not a digit, s skips it.
    """
    import webbrowser

    from mnist_kit.ui.server import PadServer

    server = PadServer(make_reader(url, model, management_url, token), port, shadow=shadow_db)
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
