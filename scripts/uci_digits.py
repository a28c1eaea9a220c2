"""Accuracy on the UCI optical digits that scikit-learn ships: 1 797 digits by other writers, 8×8 with 17 grey
levels, a source the preprocessing was not designed around; and the share flagged several_digits or not_a_digit
(false alarms, all of them). Needs scikit-learn (pip install scikit-learn). Prints a line per presentation and, with
--out, writes the figures with the machine and the model (docs/uci/*.json, which docs/SERVING.md cites).

    python scripts/uci_digits.py [--checkpoint checkpoints/mnist_sd.pt] [--out docs/uci/CPU.json]
"""

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit.evaluation import measure
from mnist_kit.files import write_json
from mnist_kit.machine import cpu

# How each digit is sent: its size in pixels, dark ink on white or white on black, and the upscaling filter.
PRESENTATIONS = {
    "8×8 PNG, white on black": (8, False, None),
    "8×8 PNG, black on white": (8, True, None),
    "64×64 PNG, nearest, black on white": (64, True, Image.Resampling.NEAREST),
    "96×96 PNG, bilinear, white on black": (96, False, Image.Resampling.BILINEAR),
}


def png(digit: np.ndarray, size: int, dark_on_light: bool, resample) -> bytes:
    image = Image.fromarray((digit * (255 / 16)).round().astype(np.uint8))
    if dark_on_light:
        image = image.point(lambda v: 255 - v)
    if size != image.width:
        image = image.resize((size, size), resample)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist_sd.pt")
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("error: scikit-learn is not installed (pip install scikit-learn)")
    digits = load_digits()
    results = {}
    for name, presentation in PRESENTATIONS.items():
        pictures, readable = measure.read_images([png(digit, *presentation) for digit in digits.images])
        replies = measure.answer_checkpoint(args.checkpoint, pictures)
        correct = (np.array([r.digit for r in replies]) == digits.target) & readable
        flags = [set(r.flags) & {"several_digits", "not_a_digit"} for r in replies]
        results[name] = {
            "images": len(correct),
            "accuracy": round(100 * correct.mean(), 2),
            "flagged": round(100 * np.mean([bool(f) for f in flags]), 2),
            "flagged_not_a_digit": round(100 * np.mean(["not_a_digit" in f for f in flags]), 2),
        }
        figures = results[name]
        print(f"{name:<38} {figures['accuracy']:5.1f} % of {len(correct)}, {figures['flagged']:4.1f} % flagged")
    if args.out:
        metrics = Path(args.checkpoint).parent / "metrics.json"
        trained = json.loads(metrics.read_text()) if metrics.is_file() else {}
        model = {key: trained[key] for key in ("test_accuracy", "epochs", "seed", "seconds") if key in trained}
        report = {
            "command": "python scripts/uci_digits.py",
            "checkpoint": str(args.checkpoint),
            "model": model,
            "machine": cpu(),
            "presentations": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(report, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
