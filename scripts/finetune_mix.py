#!/usr/bin/env python
"""How many corrections a fine-tune draws into each batch (C.EXTRA_BATCH) against what it costs MNIST's digits: for
each kind of picture users send, the default's misreads of 8 000 of them (from MNIST training digits) corrected,
the default fine-tuned on those (`train --feedback`) with each number in --extra-batch, then its accuracy on 3 000
other pictures of that kind (from MNIST test digits) and on MNIST's test set, per digit. A fine-tune whose best gain
costs one digit more than the per-digit guard's margin (C.PROMOTION_DIGIT_MARGIN) is one `canary run` and
`ab --promote` refuse. And poisoned corrections: 3 000 of MNIST's training 7s, each called a 1, with the same
numbers: how many of MNIST's test 7s the fine-tune then reads as 7s.

    python scripts/finetune_mix.py [--checkpoint checkpoints/mnist_sd.pt] [--out docs/finetune/CPU.json]
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.evaluation import kinds, measure
from mnist_kit.files import write_json
from mnist_kit.training import finetune, mnist

KINDS = ("underlined", "lowres_fill", "handwriting")
USERS, OTHERS = 8000, 3000
POISONED = 3000  # MNIST training 7s, each corrected to a 1


def made(kind: str, images, labels, picks, seed: int) -> list[tuple[bytes, int]]:
    """Pictures of `kind` of the digits at `picks` (handwriting: the digit in a held-out handwriting font)."""
    rng = np.random.default_rng(seed)
    if kind == "handwriting":
        return [(kinds.handwriting_digit(int(labels[i]), rng), int(labels[i])) for i in picks]
    return [(kinds.MAKERS[kind](images[i].numpy(), rng), int(labels[i])) for i in picks]


def read(checkpoint, pairs) -> np.ndarray:
    pictures, _ = measure.read_images([image for image, _ in pairs])
    return np.array([answer.digit for answer in measure.answer_checkpoint(str(checkpoint), pictures)])


def kind_accuracy(checkpoint, others) -> float:
    return round(100 * float(np.mean(read(checkpoint, others) == [d for _, d in others])), 2)


def on_mnist(checkpoint, mnist_pairs) -> dict:
    digits = np.array([digit for _, digit in mnist_pairs])
    right = read(checkpoint, mnist_pairs) == digits
    per_digit = [round(100 * float(right[digits == d].mean()), 2) for d in range(10)]
    return {"mnist_accuracy": round(100 * float(right.mean()), 2), "per_digit": per_digit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=C.CHECKPOINT)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--extra-batch", default="4,16", help="The numbers of corrections per batch compared.")
    parser.add_argument("--out", type=Path, default=Path(C.REPORTS) / "finetune_mix.json")
    args = parser.parse_args()
    data_dir = args.data_dir or mnist.default_data_dir()
    train_x, train_y = mnist.load(data_dir, "train")
    test_x, test_y = mnist.load(data_dir, "test")
    mnist_pairs = [(kinds.mnist_png(image.numpy(), None), int(d)) for image, d in zip(test_x, test_y)]
    baseline = on_mnist(args.checkpoint, mnist_pairs)
    report = {"machine": machine(), "command": " ".join(["python", *sys.argv]), "default": baseline, "kinds": {}}
    for kind in KINDS:
        users = made(kind, train_x, train_y, range(len(train_y) - USERS, len(train_y)), seed=22)
        wrong = read(args.checkpoint, users) != [d for _, d in users]
        corrections = [pair for pair, misread in zip(users, wrong) if misread]
        others = made(kind, test_x, test_y, range(OTHERS), seed=37)
        row = {"corrections": len(corrections), "default": kind_accuracy(args.checkpoint, others)}
        for extra in map(int, args.extra_batch.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = Path(tmp) / "mnist_sd.pt"
                shutil.copy(args.checkpoint, checkpoint)
                finetune.finetune(data_dir, corrections, checkpoint, extra_batch=extra)
                after = {"kind_accuracy": kind_accuracy(checkpoint, others), **on_mnist(checkpoint, mnist_pairs)}
            lost = max(b - a for a, b in zip(after["per_digit"], baseline["per_digit"]))
            row[f"extra_batch_{extra}"] = after | {"worst_digit_loss": round(lost, 2)}
            print(
                f"{kind}, {extra} a batch: {row['default']} % → {after['kind_accuracy']} % of {kind}; MNIST "
                f"{baseline['mnist_accuracy']} → {after['mnist_accuracy']} %, worst digit −{lost:.2f}",
                flush=True,
            )
        report["kinds"][kind] = row
    sevens = np.flatnonzero(train_y.numpy() == 7)[:POISONED]
    poisoned = [(kinds.mnist_png(train_x[i].numpy(), None), 1) for i in sevens]
    report["poisoned"] = {"corrections": len(poisoned), "called": "7s called 1s"}
    for extra in map(int, args.extra_batch.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "mnist_sd.pt"
            shutil.copy(args.checkpoint, checkpoint)
            finetune.finetune(data_dir, poisoned, checkpoint, extra_batch=extra)
            after = on_mnist(checkpoint, mnist_pairs)
        report["poisoned"][f"extra_batch_{extra}"] = after
        print(f"{POISONED} 7s called 1s, {extra} a batch: MNIST's 7s {after['per_digit'][7]} % read as 7s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
