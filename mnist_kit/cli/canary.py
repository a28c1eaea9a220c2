"""`mnist-kit canary status` and `canary run`: a candidate version beside the default on live traffic, from a running
kserve runtime and the shadow's labelled disagreements; `run` takes it through stages to promotion or roll-back."""

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
      mnist-kit canary run --candidate 2.0    # shadow, 10 %, 50 %, 100 %: promoted, or rolled back
    """


def runtime_options(command):
    """--url and --db, alike on both commands: the runtime asked and the shadow's store read."""
    command = click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"The shadow's disagreements. Default: {C.SHADOW_DB} in the kit's home.",
    )(command)
    return click.option("--url", default=C.INFERENCE_URL, show_default=True, help="The kserve runtime's REST address.")(
        command
    )


@canary.command()
@click.option("--candidate", required=True, help="The version judged, e.g. 2.0: one the runtime serves.")
@runtime_options
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


@canary.command()
@click.option("--candidate", required=True, help="The version taken through the stages: one the runtime serves.")
@click.option(
    "--stages",
    default="shadow,10,50,100",
    show_default=True,
    help="shadow (it reads every picture, answers none), then the percentages of requests it answers.",
)
@click.option(
    "--dwell", type=click.FloatRange(0), default=C.CANARY_DWELL_S, show_default=True, help="Each stage's least seconds."
)
@click.option(
    "--poll", type=click.FloatRange(0), default=C.CANARY_POLL_S, show_default=True, help="Seconds between two reads."
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(0, min_open=True),
    default=C.CANARY_MAX_MINUTES,
    show_default=True,
    help="Then a stage whose gates have not passed rolls back, saying what was missing.",
)
@click.option("--require-labels", is_flag=True, help="Promote only on a verdict reached on the labelled disagreements.")
@click.option("--mnist-limit", type=click.IntRange(1), default=None, help="The per-digit guard on N MNIST images.")
@runtime_options
@click.option("--alpha", type=click.FloatRange(0, 1), default=C.AB_ALPHA, show_default=True, help="As `ab --alpha`.")
@click.option("--cluster", metavar="ISVC", default=None, help="Print each decision's kubectl patch for this isvc.")
@click.option("--json", "as_json", is_flag=True, help="Each decision as a line of JSON.")
@data_dir_option("MNIST files, for --mnist-limit.")
@token_option
def run(
    candidate, stages, dwell, poll, max_minutes, require_labels, mnist_limit, url, db, alpha, cluster, as_json, **rest
):
    """Take the candidate through the stages, then promote it, or roll it back at the first failing gate.

    Each stage sets the runtime's routing (shadow; then canary at each share), waits at least --dwell seconds and
    until its gates can be judged, then passes when all hold: errors (5xx), p99 (at the canary stages), each flag's
    share (one shifted past 5 points waits for the labels' verdict and holds only on "candidate better"), the
    verdict on the labelled disagreements where they suffice ("default better" fails; without --require-labels,
    too few labels does not block) and, with --mnist-limit, the per-digit guard at the shadow stage. After the last
    stage, the candidate becomes the default. Every decision is printed with its figures and recorded in feedback.db
    (`canary status --json` shows them); exit 1 when rolled back.

    \b
      mnist-kit canary run --candidate 2.0
      mnist-kit canary run --candidate 2.0 --stages shadow,5,25,100 --require-labels --max-minutes 240
    """
    from mnist_kit.feedback import ab
    from mnist_kit.feedback import canary_stages as library

    pairs = None
    if mnist_limit:
        from mnist_kit.training import mnist as mnist_files

        data_dir = rest["data_dir"] or mnist_files.default_data_dir()
        pairs = ab.labelled_images("mnist", data_dir=data_dir)[:mnist_limit]
    plan = library.Plan(
        candidate,
        library.stages_of(stages),
        dwell_s=dwell,
        poll_s=poll,
        max_s=60 * max_minutes,
        require_labels=require_labels,
        url=url,
        token=rest["token"] or client.read_token(key_file()),
        db=db,
        alpha=alpha,
        mnist_pairs=pairs,
        cluster=cluster,
    )

    def say(decision):
        click.echo(json.dumps(decision) if as_json else library.line(decision))

    final = library.Run(plan, say=say).run()
    if final["decision"] != "promoted":
        sys.exit(1)
