"""`mnist-kit feedback`: the corrections the pads stored (list, stats, export), which `train --feedback` learns from."""

import json
from datetime import datetime
from pathlib import Path

import click

from mnist_kit.cli.main import cli


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
      mnist-kit feedback export corrections/      # LABEL-ID.png and feedback.csv
      mnist-kit train --feedback                  # fine-tune on MNIST and the corrections
    """
    from mnist_kit.feedback.store import Store

    ctx.obj = Store(db)


@feedback.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per correction (no image bytes).")
@click.pass_obj
def list_(store, as_json):
    """Every correction: when, its label, and the answer it corrected."""
    for c in store.corrections():
        if as_json:
            fields = ("id", "created", "label", "answered", "confidence", "model_version", "serving_form")
            click.echo(json.dumps({name: getattr(c, name) for name in fields}))
            continue
        when = datetime.fromtimestamp(c.created).strftime("%Y-%m-%d %H:%M")
        answered = (
            f"answered {c.answered} ({100 * (c.confidence or 0):.0f} %) by {c.model_version or 'unknown version'}"
            if c.answered is not None
            else "answer not given"
        )
        click.echo(f"{c.id:6d}  {when}  it is a {c.label}: {answered}")


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
    """Every correction as FOLDER/LABEL-ID.png, with feedback.csv: the layout `train --extra FOLDER` reads."""
    count = store.export(folder)
    click.echo(f"exported {count} corrections to {folder}")
