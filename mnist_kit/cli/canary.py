"""`mnist-kit canary status`: a candidate version beside the default on live traffic, from a running kserve runtime
and the shadow's labelled disagreements."""

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, data_dir_option, key_file, token_option
from mnist_kit.serving import client


@cli.group()
def canary():
    """A candidate version judged on the traffic the default version really gets.

    \b
      mnist-kit serve --runtime kserve --models mnist.mar,mnist-2.0.mar --shadow 2.0
      mnist-kit shadow label 12 7          # label the disagreements (or mnist-kit ui's /review)
      mnist-kit canary status --candidate 2.0
    """


@canary.command()
@click.option("--candidate", required=True, help="The version judged, e.g. 2.0: one the runtime serves.")
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="The kserve runtime's REST address.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The shadow's disagreements. Default: {C.SHADOW_DB} in the kit's home.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=C.AB_ALPHA,
    show_default=True,
    help="As `ab --alpha`: over every verdict on the same images; this look is tested at alpha / (k (k+1)).",
)
@click.option("--mnist", is_flag=True, help="Also run MNIST's test set through both versions: the guard per digit.")
@click.option("--mnist-limit", type=click.IntRange(1), default=None, help="The first N MNIST test images (--mnist).")
@click.option("--json", "as_json", is_flag=True, help="Everything reported, as JSON.")
@data_dir_option("MNIST files, for --mnist.")
@token_option
def status(candidate, url, db, alpha, mnist, mnist_limit, as_json, data_dir, token):
    """How the candidate does beside the default: read, never changed.

    Per version, from the runtime's /metrics: requests by status class, the error rate (5xx), p50 and p99 of its
    answers' latency (from its histogram, as Prometheus's histogram_quantile), each flag's share of its pictures;
    the shadow's agreement rate. On the labelled disagreements of the two (shadow.db): how many each read right,
    McNemar's exact test at the level of the look it would be (as `ab` counts looks; status records none), and a
    verdict: candidate better, default better, no difference shown, or too few labels. With --mnist (or
    --mnist-limit N), both versions read MNIST's test set by their version paths: the totals, and the digits on
    which the candidate reads worse than the default by more than 1 point.

    \b
      mnist-kit canary status --candidate 2.0
      mnist-kit canary status --candidate 2.0 --mnist-limit 2000 --json
    """
    from mnist_kit.feedback import ab
    from mnist_kit.feedback import canary as library

    token = token or client.read_token(key_file())
    pairs = None
    if mnist or mnist_limit:
        from mnist_kit.training import mnist as mnist_files

        pairs = ab.labelled_images("mnist", data_dir=data_dir or mnist_files.default_data_dir())[:mnist_limit]
    bar = click.progressbar(length=len(pairs), label="MNIST guard", file=sys.stderr) if pairs else nullcontext()
    with bar:
        report = library.status(
            candidate,
            url=url,
            db=db,
            token=token,
            alpha=alpha,
            mnist_pairs=pairs,
            progress=lambda done, total: bar.update(1),
        )
    click.echo(json.dumps(report, indent=2) if as_json else library.table(report))
