"""The input-drift table of docs/SERVING.md: the PSI of each drift statistic (mnist_kit/worker/drift.py) against an
archive's baseline, for sets of pictures sent as people send them. Each set goes through the archive's own serving
core (worker/core.py, loaded as the kserve runtime loads it: the serving form the archive asks for, else the one
timed fastest here, torch-free where an ONNX form loads), in batches of the archive's batch size; the pictures
answered 200 go into a fresh window (the runtime's metrics.Drifting), which is then scored. Prints a line per set
and, with --out, writes the figures with the machine, the command and the model (docs/drift/*.json).

    python scripts/drift_figures.py --archive model_store/mnist.mar [--checkpoint checkpoints/mnist_sd.pt]
        [--data-dir DIR] [--out docs/drift/CPU.json]
"""

import argparse
import hashlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.evaluation import kinds
from mnist_kit.files import write_json
from mnist_kit.packaging import mar
from mnist_kit.serving.kserve import metrics
from mnist_kit.training import mnist
from mnist_kit.worker import drift
from mnist_kit.worker.core import Core

SAMPLE_SEED = 0  # which MNIST test digits are sent as PNG
KINDS_SEED = 0  # kinds.make's seed for the photos, rotated photos, canvases and letters
PER_KIND = C.DRIFT_MIN_PICTURES  # 250: the fewest pictures a runtime scores


def pictures_sent(data_dir) -> dict[str, list[bytes]]:
    """Each set of encoded pictures, by its name in the table."""
    images, labels = (t.numpy() for t in mnist.load(data_dir, "test", download=False))
    picked = images[np.random.default_rng(SAMPLE_SEED).choice(len(images), C.DRIFT_WINDOW, replace=False)]
    digits = [kinds.mnist_png(image, None) for image in picked]
    made = {
        kind: [sent for _, _, sent in kinds.make(images, labels, per_kind=PER_KIND, seed=KINDS_SEED, kinds=(kind,))]
        for kind in ("photo", "rotated", "canvas", "not_digit/pen letter")
    }
    return {
        "MNIST test digits as PNG": digits,
        "the same, colours inverted": [kinds.mnist_png(255 - image, None) for image in picked],
        "three quarters of those MNIST digits, a quarter phone photos": digits[: C.DRIFT_WINDOW - C.DRIFT_WINDOW // 4]
        + made["photo"][: C.DRIFT_WINDOW // 4],
        "phone photos of test digits (photo)": made["photo"],
        "rotated phone photos (rotated)": made["rotated"],
        "drawing-app canvases (canvas)": made["canvas"],
        "pen letters (not_digit/pen letter)": made["not_digit/pen letter"],
    }


def scored(core: Core, baseline: drift.Baseline, sent: list[bytes], batch_size: int) -> dict:
    """`sent` through the core in batches, each picture answered 200 kept in a fresh window as the runtime keeps the
    live traffic (batcher.py, metrics.Drifting), then every statistic's PSI of that window."""
    drifting = metrics.Drifting("drift_figures", baseline, interval=0.0)
    refused = 0
    for start in range(0, len(sent), batch_size):
        rows = [{"body": data} for data in sent[start : start + batch_size]]
        decoded = core.infer(core.decode(rows, [{}] * len(rows)))
        replies, answers = core.encode(decoded), iter(decoded.answers)
        for request, reply in zip(decoded.requests, replies):
            mine = [(picture, next(answers)) for picture in request.images]
            if reply.status == 200:
                drifting.add([picture.pixels for picture, _ in mine], [answer.read() for _, answer in mine])
            else:
                refused += 1
    scores = drifting.drift.scores()
    highest = max(scores, key=scores.get)
    return {
        "sent": len(sent),
        "refused": refused,
        "pictures": len(drifting.drift.window),
        "psi": {name: round(score, 4) for name, score in scores.items()},
        "highest": {"statistic": highest, "psi": round(scores[highest], 4)},
    }


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("model_store/mnist.mar"))
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="The archive's checkpoint: its metrics.json names the model."
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST's files (default: $MNIST_DATA_DIR).")
    parser.add_argument("--serving-form", default=None, help="Force a serving form (default: as the runtime picks).")
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()
    archive = mar.read(args.archive)
    with tempfile.TemporaryDirectory(prefix="drift-figures-") as folder:
        unpacked = archive.extract(folder)
        baseline = drift.Baseline.load(unpacked)
        if baseline is None:
            sys.exit(f"error: {args.archive} carries no drift baseline ({C.DRIFT_BASELINE_FILE}): rebuild it")
        forced = args.serving_form or (archive.config.get("handler") or {}).get("serving_form")
        core = Core(str(unpacked), archive.model, serving_form=forced, with_torch=False)
        batch_size = int(archive.config.get("batchSize") or C.BATCH_SIZE)
        weights = sha256(Path(unpacked) / archive.serialized_file)
        start = time.perf_counter()
        sets = {}
        for name, sent in pictures_sent(args.data_dir or mnist.default_data_dir()).items():
            sets[name] = scored(core, baseline, sent, batch_size)
            found = sets[name]
            others = ", ".join(f"{k} {v:.3g}" for k, v in found["psi"].items() if k != found["highest"]["statistic"])
            print(
                f"{name:<62} {found['pictures']:>5}  {found['highest']['psi']:>7.3g} {found['highest']['statistic']}"
                f"  ({others})"
            )
        seconds = round(time.perf_counter() - start, 1)
    if args.out:
        model = {"archive": str(args.archive), "version": archive.version, "weights_sha256": weights}
        if args.checkpoint:
            metrics_file = args.checkpoint.parent / "metrics.json"
            trained = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
            model |= {
                "checkpoint": str(args.checkpoint),
                "checkpoint_is_the_archives": sha256(args.checkpoint) == weights,
                **{key: trained[key] for key in ("test_accuracy", "epochs", "seed", "seconds") if key in trained},
            }
        report = {
            "command": shlex.join(["python", "scripts/drift_figures.py", *sys.argv[1:]]),
            "machine": machine(),
            "model": model,
            "served_by": {"serving_form": core.form, "reason": core.form_reason, "batch_size": batch_size},
            "baseline_pictures": baseline.pictures,
            "window": C.DRIFT_WINDOW,
            "seeds": {"mnist_sample": SAMPLE_SEED, "kinds": KINDS_SEED},
            "seconds": seconds,
            "sets": sets,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(report, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
