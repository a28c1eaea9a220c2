"""Accuracy on the UCI optical digits that scikit-learn ships: 1 797 digits by other writers, 8×8 with 17 grey
levels, a source the preprocessing was not designed around; and the share flagged several_digits or not_a_digit
(false alarms, all of them). Needs scikit-learn (pip install scikit-learn).

    python scripts/uci_digits.py [--checkpoint checkpoints/mnist_sd.pt]
"""

import argparse
import io
import sys

import numpy as np
from PIL import Image

from mnist_kit.evaluation import measure

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
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("error: scikit-learn is not installed (pip install scikit-learn)")
    digits = load_digits()
    for name, presentation in PRESENTATIONS.items():
        pictures, readable = measure.read_images([png(digit, *presentation) for digit in digits.images])
        replies = measure.answer_checkpoint(args.checkpoint, pictures)
        correct = (np.array([r.digit for r in replies]) == digits.target) & readable
        flagged = np.mean([bool({"several_digits", "not_a_digit"} & set(r.flags)) for r in replies])
        print(f"{name:<38} {100 * correct.mean():5.1f} % of {len(correct)}, {100 * flagged:4.1f} % flagged")


if __name__ == "__main__":
    main()
