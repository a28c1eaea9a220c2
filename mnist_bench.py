"""Benchmarks: what preprocessing costs per kind of image (and, with a server, what serving costs)."""

import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

import mnist_preprocess
import mnist_variants

SAMPLE = Path(__file__).resolve().parent / "examples" / "digits" / "7.png"


def sample_images() -> dict[str, bytes]:
    """The image types the README promises to handle fast, made from the sample 7."""
    digit = np.asarray(Image.open(SAMPLE))
    rng = np.random.default_rng(0)
    canvas = mnist_variants.canvas_png(digit, rng)
    while Image.open(io.BytesIO(canvas)).mode != "RGBA":
        canvas = mnist_variants.canvas_png(digit, rng)
    photo = Image.open(io.BytesIO(mnist_variants.photo_jpeg(digit, rng)))
    return {
        "28×28 PNG": SAMPLE.read_bytes(),
        "280×280 RGBA canvas PNG": canvas,
        "1000×750 JPEG": mnist_variants.encode(photo.resize((1000, 750)), "JPEG", quality=90),
        "4000×3000 JPEG": mnist_variants.encode(photo.resize((4000, 3000)), "JPEG", quality=90),
    }


def preprocess_costs(min_seconds: float = 1.0) -> dict[str, dict]:
    """Median milliseconds per image of decode + preprocessing, on one core (PIL and numpy are single-threaded)."""
    results = {}
    for name, data in sample_images().items():
        mnist_preprocess.image_bytes_to_pixels(data)
        times = []
        deadline = time.perf_counter() + min_seconds
        while time.perf_counter() < deadline or len(times) < 20:
            start = time.perf_counter()
            mnist_preprocess.image_bytes_to_pixels(data)
            times.append(time.perf_counter() - start)
        results[name] = {"bytes": len(data), "ms_median": round(1000 * statistics.median(times), 3),
                         "ms_p90": round(1000 * np.percentile(times, 90), 3), "runs": len(times)}
    return results


def print_preprocess_costs() -> None:
    print(f"{'image':<26}{'bytes':>9}{'ms median':>11}{'ms p90':>9}")
    for name, r in preprocess_costs().items():
        print(f"{name:<26}{r['bytes']:>9}{r['ms_median']:>11.3f}{r['ms_p90']:>9.3f}")


if __name__ == "__main__":
    print_preprocess_costs()
