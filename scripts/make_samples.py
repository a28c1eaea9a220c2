"""Write mnist_kit/samples/: the images `mnist-kit bench` times preprocessing on, made once from the sample 7.

7.png is examples/digits/7.png; canvas.png (a drawing app's 280×280 RGBA export) and photo.jpg (a phone photo of
ink on paper) come from the held-out image generator, mnist_kit.evaluation.kinds; shipped as files, so the bench needs
neither it nor matplotlib's fonts.
Usage: python scripts/make_samples.py
"""

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit.evaluation import kinds

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    seven = ROOT / "examples" / "digits" / "7.png"
    out = ROOT / "mnist_kit" / "samples"
    out.mkdir(exist_ok=True)
    digit = np.asarray(Image.open(seven))
    rng = np.random.default_rng(0)
    canvas = kinds.canvas_png(digit, rng)
    while Image.open(io.BytesIO(canvas)).mode != "RGBA":
        canvas = kinds.canvas_png(digit, rng)
    shutil.copy(seven, out / "7.png")
    (out / "canvas.png").write_bytes(canvas)
    (out / "photo.jpg").write_bytes(kinds.photo_jpeg(digit, rng))
    for path in sorted(out.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
