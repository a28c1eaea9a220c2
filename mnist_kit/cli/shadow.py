"""`mnist-kit shadow`: the pictures a shadow version answered otherwise than the default (list), their labels
(label), and the labelled images as files (export)."""

import json
from contextlib import closing
from datetime import datetime
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli
from mnist_kit.serving.kserve.disagreements import NOT_A_DIGIT, DisagreementStore, label_name

LABELS = [*map(str, range(10)), label_name(NOT_A_DIGIT)]  # "not-a-digit"


@cli.group()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The disagreements' database. Default: {C.SHADOW_DB} in the kit's home.",
)
@click.pass_context
def shadow(ctx, db):
    """The disagreements of a shadow version: every picture that `serve --runtime kserve --shadow VERSION` had the
    shadow answer otherwise than the default, kept with the bytes as sent and both answers in shadow.db in the
    kit's home (the oldest go once the images pass the cap), never sent anywhere. Labelled here, they are what a
    verdict on the shadow version is given on.

    \b
      mnist-kit shadow list --unlabelled
      mnist-kit shadow label 12 7              # disagreement 12 is a 7
      mnist-kit shadow label 13 not-a-digit
      mnist-kit shadow list --json --limit 50  # for scripts: no image bytes, their sha256 and size
      mnist-kit shadow export labelled/        # LABEL-ID.png (.jpg, ...): what `train --extra` reads
    """
    ctx.obj = db  # opened by each command: a usage error or --help creates no database


@shadow.command("list")
@click.option("--unlabelled", is_flag=True, help="Only those without a label yet.")
@click.option("--limit", type=click.IntRange(1), default=None, help="The newest N only.")
@click.option("--json", "as_json", is_flag=True, help="The disagreements (no image bytes) and the counts, as JSON.")
@click.pass_obj
def list_(db, unlabelled, limit, as_json):
    """The disagreements kept, newest first, and the counts.

    Each: its id, when, each version's digit and confidence, its label.

    \b
      mnist-kit shadow list
           3  2026-05-09 14:02  1.0 → 7 (98 %)  2.0 → 1 (61 %)  unlabelled
      3 kept in shadow.db: 1 labelled, 2 unlabelled; 0 evicted; 1,254 bytes of images
    """
    with closing(DisagreementStore(db)) as store:
        found, stats = store.list(unlabelled=unlabelled, limit=limit), store.stats()
    if as_json:
        rows = [as_object(d) for d in found]
        click.echo(json.dumps({"disagreements": rows, "stats": stats}, indent=2))
        return
    for d in found:
        when = datetime.fromtimestamp(d.created).strftime("%Y-%m-%d %H:%M")
        default = answered(d.default_version, d.default_answer)
        click.echo(
            f"{d.id:6d}  {when}  {default}  {answered(d.shadow_version, d.shadow_answer)}  {label_name(d.label)}"
        )
    click.echo(
        f"{stats['stored']} kept in {store.path}: {stats['labelled']} labelled, {stats['unlabelled']} unlabelled; "
        f"{stats['evicted']} evicted; {stats['bytes']:,} bytes of images"
    )


@shadow.command()
@click.argument("disagreement", type=int)
@click.argument("digit", type=click.Choice(LABELS), metavar="DIGIT")
@click.option("--json", "as_json", is_flag=True, help="The label given and the counts, as JSON.")
@click.pass_obj
def label(db, disagreement, digit, as_json):
    """Say what a disagreement's picture really is.

    DISAGREEMENT is its id in `shadow list`; DIGIT is 0 to 9, or not-a-digit. Labelling again replaces the label.

    \b
      mnist-kit shadow label 12 7
      mnist-kit shadow label 13 not-a-digit --json
    """
    number = NOT_A_DIGIT if digit == LABELS[-1] else int(digit)
    with closing(DisagreementStore(db)) as store:
        store.label(disagreement, number)
        stats = store.stats()
    if as_json:
        click.echo(json.dumps({"id": disagreement, "label": json_label(number), "stats": stats}, indent=2))
        return
    click.echo(f"disagreement {disagreement} is {'not a digit' if number == NOT_A_DIGIT else f'a {digit}'}")


@shadow.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export(db, folder):
    """The labelled disagreements as image files.

    Each as FOLDER/LABEL-ID.png (.jpg, ...: the bytes as sent), with shadow.csv: the layout `train --extra FOLDER`
    reads, which skips the not-a-digit-ID ones.
    """
    with closing(DisagreementStore(db)) as store:
        count = store.export(folder)
    click.echo(f"exported {count} labelled disagreements to {folder}")


def answered(version: str, answer: dict) -> str:
    confidence = answer.get("confidence")
    sure = f" ({100 * confidence:.0f} %)" if isinstance(confidence, (int, float)) else ""
    return f"{version} → {answer.get('digit')}{sure}"


def as_object(d) -> dict:
    """A disagreement for scripts: the image named by its sha256 and size, the label as `label` takes it."""
    fields = ("id", "created", "sha256", "content_type", "default_version", "default_answer", "shadow_version")
    row = {name: getattr(d, name) for name in fields}
    return {**row, "shadow_answer": d.shadow_answer, "bytes": len(d.image), "label": json_label(d.label)}


def json_label(label: int | None) -> int | str | None:
    """0-9, "not-a-digit" (as `label` takes it), or None: unlabelled."""
    return label_name(label) if label == NOT_A_DIGIT else label
