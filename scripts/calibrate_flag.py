"""Choose the not_a_digit threshold (constants.NOT_A_DIGIT_BELOW) on held-out digits: the real-world digit kinds made
with another seed than the figures' (evaluation/kinds.py, seed 1), answered by a checkpoint as the handler answers.

The threshold is the highest top probability under which at most --max-kind of each digit kind's pictures and at most
--max-all of them together would be flagged; the script also says how many of the same seed's non-digits of each kind
it would flag. The figures in docs/ are then measured on the seed-0 kinds and MNIST's test set, which the choice
never saw.

    python scripts/calibrate_flag.py [--checkpoint checkpoints/mnist_sd.pt] [--out docs/real-world/CPU-flag.json]
"""

import argparse
from pathlib import Path

import numpy as np

from mnist_kit import constants as C
from mnist_kit.evaluation import kinds, measure
from mnist_kit.files import write_json
from mnist_kit.machine import cpu
from mnist_kit.training import mnist

GRID = np.round(np.arange(0.10, 0.61, 0.01), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist_sd.pt")
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--max-kind", type=float, default=1.0, help="Percent of a digit kind flagged, at most.")
    parser.add_argument("--max-all", type=float, default=0.5, help="Percent of all the digits flagged, at most.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    images, labels = mnist.load(mnist.default_data_dir(), "test", download=False)
    made = [m for m in kinds.make(images.numpy(), labels.numpy(), per_kind=args.per_kind, seed=1) if m[0] != "several"]
    pictures, readable = measure.read_images([data for _, _, data in made])
    replies = measure.answer_checkpoint(args.checkpoint, pictures)
    top = {}
    for (kind, _, _), reply, ok in zip(made, replies, readable):
        top.setdefault(kind, []).append(max(reply.probabilities) if ok else 0.0)
    digit_kinds = [kind for kind in top if kind not in kinds.FLAGGED]
    every_digit = np.concatenate([top[kind] for kind in digit_kinds])

    def flagged(kind_tops, threshold) -> float:
        return round(100 * float(np.mean(np.asarray(kind_tops) < threshold)), 2)

    allowed = [
        t
        for t in GRID
        if flagged(every_digit, t) <= args.max_all and all(flagged(top[k], t) <= args.max_kind for k in digit_kinds)
    ]
    chosen = float(max(allowed)) if allowed else None
    report = {
        "command": "python scripts/calibrate_flag.py",
        "checkpoint": str(args.checkpoint),
        "machine": cpu(),
        "seed": 1,
        "per_kind": args.per_kind,
        "max_kind": args.max_kind,
        "max_all": args.max_all,
        "chosen": chosen,
        "current": C.NOT_A_DIGIT_BELOW,
        "at": {
            str(t): {kind: flagged(top[kind], t) for kind in top} | {"all digits": flagged(every_digit, t)}
            for t in sorted({chosen or GRID[0], C.NOT_A_DIGIT_BELOW})
        },
    }
    for t, shares in report["at"].items():
        print(f"below {t}: " + ", ".join(f"{kind} {share:.1f} %" for kind, share in shares.items()))
    print(f"chosen: {chosen} (the kit's now: {C.NOT_A_DIGIT_BELOW})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(report, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
