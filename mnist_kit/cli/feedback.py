"""`mnist-kit feedback`: the corrections the pads stored (list, stats, export), which `train --feedback` learns from;
and `mnist-kit ab`, which compares two served versions before one is promoted."""

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, data_dir_option, key_file, token_option
from mnist_kit.paths import home
from mnist_kit.serving import client
from mnist_kit.serving.torchserve import management


@cli.group()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The feedback database. Default: feedback.db in the kit's home.",
)
@click.pass_context
def feedback(ctx, db):
    """The corrections given on `mnist-kit ui` and `mnist-kit pad` ("wrong? it is a _"), or POSTed to the ui
    server's /api/feedback; kept in feedback.db in the kit's home, never sent anywhere.

    \b
      mnist-kit feedback stats
      mnist-kit feedback list
      mnist-kit feedback export corrections/      # LABEL-ID.png (.jpg, ...) and feedback.csv
      mnist-kit train --feedback                  # fine-tune on MNIST and the corrections
    """
    from mnist_kit.feedback.store import Store

    ctx.obj = Store(db)


@feedback.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per correction (no image bytes).")
@click.pass_obj
def list_(store, as_json):
    """Every correction: when, its label, the answer it corrected, and the fine-tunes that trained on it."""
    trained_by = store.trained_by()
    for c in store.corrections():
        finetunes = trained_by.get(c.sha256, [])
        if as_json:
            fields = ("id", "created", "label", "answered", "confidence", "model_version", "serving_form")
            click.echo(json.dumps({**{name: getattr(c, name) for name in fields}, "trained_by": finetunes}))
            continue
        when = datetime.fromtimestamp(c.created).strftime("%Y-%m-%d %H:%M")
        answered = (
            f"answered {c.answered} ({100 * (c.confidence or 0):.0f} %) by {c.model_version or 'unknown version'}"
            if c.answered is not None
            else "answer not given"
        )
        trained = f"; trained on by fine-tune {', '.join(map(str, finetunes))}" if finetunes else ""
        click.echo(f"{c.id:6d}  {when}  it is a {c.label}: {answered}{trained}")


@feedback.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(store, as_json):
    """How many corrections, per digit and per model version."""
    summary = store.stats()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['total']} corrections in {store.path}")
    if summary["total"]:
        click.echo("per digit: " + ", ".join(f"{d}: {n}" for d, n in summary["per_label"].items()))
        for version, counts in summary["per_version"].items():
            wrong = counts["wrong"]
            click.echo(f"version {version}: {counts['corrections']} corrections, {wrong} of them of wrong answers")


@feedback.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export(store, folder):
    """Every correction as FOLDER/LABEL-ID.png (.jpg, ...: the exact file sent, EXIF orientation included), with
    feedback.csv: the layout `train --extra FOLDER` reads."""
    count = store.export(folder)
    click.echo(f"exported {count} corrections to {folder}")


@cli.command("ab")
@click.option("--a", "version_a", required=True, help="The version serving now, e.g. 1.0.")
@click.option("--b", "version_b", required=True, help="The candidate, e.g. 2.0.")
@click.option(
    "--set",
    "which",
    default="feedback",
    show_default=True,
    help="The labelled images: feedback (the stored corrections), real-world (held-out kinds), mnist (the 10 000 "
    "test images), or a folder of LABEL-*.png or LABEL/*.png.",
)
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="The server, with both versions loaded.")
@click.option("--url-b", default=None, help="B on another server instead (e.g. a kserve runtime serving it).")
@click.option("--management-url", default=C.MANAGEMENT_URL, show_default=True, help="Where --promote sets B.")
@click.option("--limit", type=click.IntRange(1), default=None, help="The first N images of the set only.")
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=C.AB_ALPHA,
    show_default=True,
    help='The chance of a false "B better" over every verdict on the same images together (the k-th look at '
    "them is tested at alpha / (k (k+1))).",
)
@click.option("--fresh", is_flag=True, help="Only images no earlier verdict was given on: the first look at them.")
@click.option("--promote", is_flag=True, help="Make B the default, if it is better here and not worse on MNIST.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The feedback database: the corrections, the fine-tunes and what they trained on, the earlier verdicts. "
    "Default: feedback.db in the kit's home.",
)
@data_dir_option("MNIST files, for --set mnist or real-world and for --promote.")
@token_option
def ab_test(
    version_a,
    version_b,
    which,
    url,
    url_b,
    management_url,
    limit,
    alpha,
    fresh,
    promote,
    plot_path,
    as_json,
    db,
    data_dir,
    token,
):
    """Compare versions A and B of the served model on the same labelled images, and say which is better.

    Each image goes to both versions; the verdict (B better / no difference shown / B worse) comes from McNemar's
    exact test on the images only one of them reads, given at least 100 images; an error counts as a wrong answer.
    Of the corrections (or a folder), the images any fine-tune trained on are left out, and the test is refused when
    a fine-tune of checkpoints/ is not recorded. Each verdict is remembered: the k-th on the same images is tested at
    alpha / (k (k+1)), so trying until one passes does not help; --fresh scores only images never used before.
    --promote makes B the default (`models set-default`) only when it is better on the set, fails no more requests
    than A, and is within 0.1 points of A on MNIST's test set and within 1 point on each digit's images of it;
    otherwise it says why not (with each digit's accuracy, where a digit is read worse) and changes nothing.

    \b
      mnist-kit ab --a 1.0 --b 2.0 --set feedback
      mnist-kit ab --a 1.0 --b 2.0 --set mnist --json
      mnist-kit ab --a 1.0 --b 2.0 --set corrections/ --promote
    """
    from mnist_kit.feedback import ab
    from mnist_kit.feedback.store import Store
    from mnist_kit.training import mnist

    if promote and url_b:
        raise click.UsageError(
            "--promote sets the default version of one server; with --url-b, B is another server: move traffic to it "
            "with a rollout (docs/DEPLOYING.md) instead"
        )
    token = token or client.read_token(key_file())
    data_dir = data_dir or mnist.default_data_dir()
    store = Store(db)
    checkpoints = (home() / C.CHECKPOINT).parent
    images = ab.image_set(which, store=store, checkpoints=checkpoints, data_dir=data_dir, fresh=fresh, limit=limit)
    versions = {"version_a": version_a, "version_b": version_b, "url": url, "url_b": url_b, "token": token}
    level = ab.look_level(alpha, images.look)
    result = compare_with_progress(images.pairs, **versions, alpha=level, label=which)
    ab.record(store, images, result)
    report = {"set": which, "left_out": images.left_out, "look": images.look, "alpha_over_all_looks": alpha, **result}
    if promote:
        if which == "mnist":
            mnist_result = result
        else:
            mnist_pairs = ab.labelled_images("mnist", data_dir=data_dir)
            mnist_result = compare_with_progress(mnist_pairs, **versions, alpha=alpha, label="mnist")
        allowed, why = ab.promotion(result, mnist_result)
        report["mnist"] = mnist_result
        report["promotion"] = {"promoted": allowed, "why": why, "digits_lost": ab.digits_lost(mnist_result)}
        if allowed:
            manager = management.Management(management_url, client.read_token(key_file(), api="management"))
            manager.set_default(C.MODEL_NAME, version_b)
    if plot_path:
        ab.plot(result, plot_path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(ab.table(report))
    if plot_path:
        click.echo(f"wrote {plot_path}")


def compare_with_progress(pairs, version_a, version_b, *, url, url_b, token, alpha, label):
    from mnist_kit.feedback import ab

    with click.progressbar(length=len(pairs), label=f"A/B on {label}", file=sys.stderr) as bar:
        return ab.run(
            pairs,
            version_a,
            version_b,
            url=url,
            url_b=url_b,
            token=token,
            alpha=alpha,
            progress=lambda done, total: bar.update(1),
        )
