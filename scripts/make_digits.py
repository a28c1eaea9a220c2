"""Write examples/digits/0.png … 9.png: for each digit, the MNIST test image closest to that digit's mean image.

The most typical test digit of each class, so a sample that fails points at the model, not at an odd sample.
Usage: python scripts/make_digits.py [--data-dir DIR] [--out examples/digits]
"""

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mnist_kit.training import mnist  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="Folder with the MNIST IDX files (default: $MNIST_DATA_DIR or data/mnist in the kit's home)",
    )
    parser.add_argument("--out", default="examples/digits")
    args = parser.parse_args()
    images, labels = mnist.load(args.data_dir or mnist.default_data_dir(), "test")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = images.float()
    for digit in range(10):
        members = (labels == digit).nonzero().flatten()
        mean = pixels[members].mean(0)
        closest = members[((pixels[members] - mean) ** 2).sum((1, 2)).argmin()]
        Image.fromarray(images[closest].numpy(), mode="L").save(out / f"{digit}.png", optimize=True)
        print(f"{out / f'{digit}.png'}: test image #{closest.item()}")


if __name__ == "__main__":
    main()
