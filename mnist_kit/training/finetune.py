"""`mnist-kit train --feedback` / `--extra DIR`: fine-tune the current model on MNIST mixed with the corrections
users gave, and say what it changed.

The corrections go through the serving preprocessing (the 28×28 the model reads when they are sent), a share of
them is held out, the rest is drawn into every batch beside MNIST's (oversampled, and augmented as MNIST is). The
new weights replace the checkpoint `mnist-kit archive` packs, after the old ones are copied beside it with the
time in their name, never overwritten; the metrics give MNIST test accuracy and the held-out corrections' accuracy,
before and after.
"""

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.files import sha256, write_json
from mnist_kit.training import mnist
from mnist_kit.training.fit import Recipe, evaluate, fit
from mnist_kit.worker import preprocess
from mnist_kit.worker.request_errors import InputError
from mnist_model import MnistClassificationNet


def read(pairs: list[tuple[bytes, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Image files and their digits → the 28×28 uint8 the model reads of each, the labels, and the indices of the
    pairs kept: not those the preprocessing refuses, nor those holding several digits (one label cannot say which
    is which)."""
    pixels, labels, kept = [], [], []
    for index, (data, label) in enumerate(pairs):
        try:
            picture = preprocess.read_image(data)
        except InputError:
            continue
        if len(picture.digits) > 1:
            continue
        pixels.append(picture.pixels)
        labels.append(label)
        kept.append(index)
    if not pixels:
        return torch.zeros(0, C.IMAGE_SIZE, C.IMAGE_SIZE, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), kept
    return torch.from_numpy(np.stack(pixels)), torch.tensor(labels), kept


def split(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices to train on and to hold out: a seeded shuffle, round(count × holdout) held out."""
    order = np.random.default_rng(seed).permutation(count)
    held = round(count * holdout)
    return np.sort(order[held:]), np.sort(order[:held])


def accuracy(checkpoint, images: torch.Tensor, labels: torch.Tensor) -> float | None:
    if len(labels) == 0:
        return None
    model = MnistClassificationNet()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return round(evaluate(model, images, labels), 3)


def finetune(
    data_dir,
    pairs: list[tuple[bytes, int]],
    checkpoint=C.CHECKPOINT,
    *,
    epochs: int = C.FINETUNE_EPOCHS,
    lr: float = C.FINETUNE_LR,
    holdout: float = C.FEEDBACK_HOLDOUT,
    seed: int = C.SEED,
    limit: int | None = None,
    extra_batch: int = C.EXTRA_BATCH,
    store=None,
    sources: list[str] | None = None,
    on_step=None,
    on_epoch=None,
) -> dict:
    """Fine-tune `checkpoint` in place (its old weights kept beside it) on MNIST and `pairs`; the metrics.

    With `store` (the feedback database), the fine-tune and the images it trains on (by content hash, with
    `sources` saying where each pair came from) are recorded there before training starts, and its weights' hash
    when it ends: an A/B test on the corrections must leave out whatever some fine-tune learnt."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise KitError(f"{checkpoint} not found: fine-tuning starts from a trained model (mnist-kit train)")
    images, labels, kept = read(pairs)
    skipped = len(pairs) - len(kept)
    train, held = split(len(labels), holdout, seed)
    if len(train) == 0:
        raise KitError(f"no corrections to learn from ({len(pairs)} given, {skipped} unreadable or several digits)")
    test_x, test_y = mnist.load(data_dir, "test")
    before = {
        "mnist_test": accuracy(checkpoint, test_x, test_y),
        "held_out": accuracy(checkpoint, images[held], labels[held]),
    }

    finetune_id = None
    if store is not None:
        sources = sources or [f"image {i + 1}" for i in range(len(pairs))]
        trained = [(sha256(pairs[kept[i]][0]), sources[kept[i]]) for i in train]
        finetune_id = store.start_finetune(checkpoint, trained)
    previous = keep_previous(checkpoint)
    metrics = fit(
        Recipe(epochs=epochs, lr=lr, seed=seed, limit=limit, extra_batch=extra_batch),
        checkpoint,
        data_dir=data_dir,
        force=True,
        init=previous,
        extra=(images[train], labels[train]),
        on_step=on_step,
        on_epoch=on_epoch,
    )
    weights = sha256(checkpoint.read_bytes())
    if store is not None:
        store.finish_finetune(finetune_id, weights)
    after = {
        "mnist_test": round(metrics["test_accuracy"], 3),
        "held_out": accuracy(checkpoint, images[held], labels[held]),
    }
    metrics["feedback"] = {
        "corrections": len(pairs),
        "unreadable_or_several": skipped,
        "trained_on": len(train),
        "held_out": len(held),
        "before": before,
        "after": after,
        "previous_checkpoint": str(previous),
        "finetune": finetune_id,
        "recorded_in": str(store.path) if store is not None else None,
        "weights_sha256": weights,
    }
    write_json(metrics, checkpoint.parent / "metrics.json")
    return metrics


def keep_previous(checkpoint: Path) -> Path:
    """Copy `checkpoint`, and the metrics.json beside it, to names with the time in them; the copy's path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    previous = checkpoint.with_name(f"{checkpoint.stem}.{stamp}{checkpoint.suffix}")
    shutil.copy2(checkpoint, previous)
    metrics_file = checkpoint.parent / "metrics.json"
    if metrics_file.is_file():
        shutil.copy2(metrics_file, checkpoint.parent / f"metrics.{stamp}.json")
    return previous
