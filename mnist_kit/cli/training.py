"""Training commands: train the network, measure it (evaluate), and see what it looks at (explain)."""

import json
import sys
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, data_dir_option, given, key_file, path_option, token_option


@cli.command()
@data_dir_option("Folder with the four MNIST IDX files (.gz or raw).")
@click.option("--epochs", default=C.EPOCHS, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=C.TRAIN_BATCH_SIZE, show_default=True, type=click.IntRange(1))
@click.option(
    "--lr",
    default=C.LEARNING_RATE,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Peak learning rate of the one-cycle schedule (AdamW).",
)
@click.option("--seed", default=C.SEED, show_default=True, type=int, help="Same seed, same model (on CPU).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on the first N images only (quick runs).")
@click.option(
    "--augment/--no-augment",
    "augmentation",
    default=True,
    show_default=True,
    help="Random rotation, scale and shift of training digits.",
)
@click.option(
    "--handwriting",
    is_flag=True,
    help="Also show it letters in 27 handwriting fonts as non-digits, and their digits as digits (the glyph bank "
    "the kit ships): the not_a_digit flag catches more letters, a few more digits of some kinds are flagged "
    "(docs/SERVING.md#handwriting-fonts); about a sixth longer.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="bf16 autocast for the training math (weights stay fp32); auto uses it where the CPU or GPU "
    "computes bf16 natively (AMX, AVX512-BF16, CUDA), where it is faster than fp32.",
)
@path_option(
    "--out", default=C.CHECKPOINT, dir_okay=False, help="Where to write the state_dict; metrics.json goes beside it."
)
@click.option("--force", is_flag=True, help="Overwrite an existing OUT (and the metrics.json beside it).")
@click.option(
    "--feedback",
    is_flag=True,
    help="Fine-tune OUT on MNIST and the corrections stored by the pads (`mnist-kit feedback`), instead of training "
    f"from scratch: {C.FINETUNE_EPOCHS} epochs at {C.FINETUNE_LR:g} unless --epochs or --lr say otherwise.",
)
@click.option(
    "--extra",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Fine-tune on this folder of labelled images too (LABEL-*.png, as `feedback export` writes, or LABEL/*.png).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
@click.pass_context
def train(ctx, data_dir, out, force, feedback, extra, as_json, **recipe):
    """Train the CNN on MNIST and save its state_dict.

    Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (raw or .gz), checks them against the published MD5s, prints test
    accuracy after each epoch, and writes OUT and metrics.json beside it (accuracy, seconds, versions).
    An existing OUT is refused before training starts, unless --force.

    With --feedback or --extra, fine-tunes OUT instead: the corrections through the serving preprocessing, a fifth
    held out, the rest drawn into every batch; the old weights are kept beside OUT (mnist_sd.TIME.pt), and the
    metrics say MNIST test accuracy and the held-out corrections' accuracy before and after. Then archive the new
    weights as a new version: `mnist-kit archive --version 2.0`.
    """
    from mnist_kit.training.fit import Recipe, fit

    recipe = Recipe(**recipe)  # --epochs to --precision: the options that decide the weights
    if feedback or extra:
        return finetune_command(ctx, data_dir, out, recipe, feedback=feedback, extra=extra, as_json=as_json)

    def on_epoch(epoch, loss, accuracy):
        click.echo(f"epoch {epoch}/{recipe.epochs}: loss {loss:.4f}, test accuracy {accuracy:.2f} %")

    quiet = {} if as_json else {"on_step": epoch_bars(recipe.epochs), "on_epoch": on_epoch}
    metrics = fit(recipe, out, data_dir=data_dir, force=force, **quiet)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        seconds = metrics["seconds"]
        click.echo(f"test accuracy {metrics['test_accuracy']:.2f} % after {recipe.epochs} epochs in {seconds:.0f} s")
        click.echo(f"wrote {out} and {out.parent / 'metrics.json'}")


def epoch_bars(epochs: int, label: str = ""):
    """A progress bar per epoch, as fit's on_step(epoch, step, steps) callback."""
    bar = None

    def on_step(epoch, step, steps):
        nonlocal bar
        if step == 1:
            bar = click.progressbar(length=steps, label=f"{label}epoch {epoch}/{epochs}")
        bar.update(1)
        if step == steps:
            bar.render_finish()

    return on_step


def finetune_command(ctx, data_dir, out, recipe, *, feedback, extra, as_json):
    """`train --feedback` / `--extra`: the recipe's epochs, lr, seed and limit, its other options refused."""
    from mnist_kit.feedback.store import Store, labelled_files
    from mnist_kit.training import mnist
    from mnist_kit.training.finetune import finetune

    unused = given(ctx, "batch_size", "augmentation", "handwriting", "device", "precision", "force")
    if unused:
        raise click.UsageError(
            f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for training from scratch: a fine-tune "
            "(--feedback, --extra) keeps the recipe's batches, augmentation, device and precision, and keeps the "
            "old weights beside OUT instead of overwriting them"
        )
    epochs = recipe.epochs if given(ctx, "epochs") else C.FINETUNE_EPOCHS
    lr = recipe.lr if given(ctx, "lr") else C.FINETUNE_LR

    store = Store()
    corrections = store.corrections() if feedback else []
    pairs = [(c.image, c.label) for c in corrections]
    sources = [f"correction {c.id}" for c in corrections]
    for path, label in labelled_files(extra) if extra else []:
        pairs.append((path.read_bytes(), label))
        sources.append(str(path))
    quiet = {} if as_json else {"on_step": epoch_bars(epochs, "fine-tuning, ")}
    metrics = finetune(
        data_dir or mnist.default_data_dir(),
        pairs,
        out,
        epochs=epochs,
        lr=lr,
        seed=recipe.seed,
        limit=recipe.limit,
        store=store,
        sources=sources,
        **quiet,
    )
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    f = metrics["feedback"]
    before, after = f["before"], f["after"]
    click.echo(
        f"fine-tuned on {f['trained_on']} corrections ({f['held_out']} held out, {f['unreadable_or_several']} left "
        f"out) and MNIST in {metrics['seconds']:.0f} s"
    )
    click.echo(f"MNIST test accuracy: {before['mnist_test']:.2f} % → {after['mnist_test']:.2f} %")
    if f["held_out"]:
        click.echo(f"held-out corrections: {before['held_out']:.1f} % → {after['held_out']:.1f} %")
    click.echo(f"wrote {out}; the previous weights are in {f['previous_checkpoint']}")
    click.echo(f"recorded as fine-tune {f['finetune']} in {f['recorded_in']}: `mnist-kit ab` leaves out what it learnt")
    click.echo("next: mnist-kit archive --version 2.0, then mnist-kit ab --a 1.0 --b 2.0")


@cli.command("evaluate")
@path_option(
    "--checkpoint",
    default=C.CHECKPOINT,
    dir_okay=False,
    help="The state_dict to evaluate in this process (ignored with --url).",
)
@click.option("--url", default=None, help="Evaluate a live TorchServe instead, sending each test image as a PNG.")
@token_option
@data_dir_option("Folder with the MNIST files.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N test images.")
@path_option("--out", default=C.REPORTS, file_okay=False)
@click.option(
    "--real-world",
    is_flag=True,
    help="Accuracy on held-out images shaped the way people send digits (canvas, photo, tight crop, …), "
    "through the serving preprocessing; writes OUT/real_world.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the summary.")
def evaluate_command(checkpoint, url, token, data_dir, limit, out, real_world, as_json):
    """Measure accuracy on the MNIST test set, per digit, with pictures.

    Writes OUT/evaluation.json (accuracy, per-digit precision and recall, confusion matrix),
    OUT/confusion_matrix.png and OUT/misclassified.png (the most confidently wrong images).
    With --url it checks what is served: every image goes through HTTP and the handler.
    With --real-world it measures the checkpoint on held-out real-world kinds of images (docs/SERVING.md) instead.
    """
    from mnist_kit.evaluation import measure
    from mnist_kit.serving import client
    from mnist_kit.training import mnist

    images, labels = mnist.load(data_dir or mnist.default_data_dir(), "test")
    images, labels = images[:limit], labels[:limit]
    if real_world:
        results = measure.real_world(checkpoint, images, labels)
        path = measure.write_real_world(results, checkpoint, out)
        if as_json:
            click.echo(path.read_text())
            return
        click.echo(measure.real_world_table(results))
        click.echo(f"wrote {path}")
        return
    if url:
        token = token or client.read_token(key_file())
        with click.progressbar(length=len(images), label=f"evaluating {url}", file=sys.stderr) as bar:
            probabilities = measure.predict_endpoint(url, images, token, on_result=lambda: bar.update(1))
    else:
        probabilities = measure.predict_checkpoint(checkpoint, images)
    summary = measure.summarize(probabilities, labels.numpy())
    paths = measure.write_reports(summary, probabilities, labels.numpy(), images=images.numpy(), out_dir=out)
    if as_json:
        click.echo(paths["json"].read_text())
        return
    click.echo(measure.summary_table(summary, url or checkpoint))
    click.echo(f"wrote {paths['json']}, {paths['confusion']} and {paths['misclassified']}")


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@path_option("--out", default="explain.png", dir_okay=False)
@click.option("--url", default=C.INFERENCE_URL, show_default=True, help="TorchServe inference address.")
@click.option("--model", default=C.MODEL_NAME, show_default=True)
@token_option
def explain(image, out, url, model, token):
    """Show which pixels made the served model read IMAGE as its digit.

    Asks /explanations/MODEL for Integrated Gradients attributions and writes OUT: the 28×28 input the
    model saw, with pixels that pushed towards the digit in red and against it in blue.
    """
    from mnist_kit.serving import client
    from mnist_kit.training.explain import overlay

    answer = client.explain(image.read_bytes(), url=url, model=model, token=token or client.read_token(key_file()))
    overlay(answer, out, title=f"{image.name}: read as {answer['digit']}")
    click.echo(f"{image}: {answer['digit']}; wrote {out}")
