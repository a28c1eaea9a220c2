"""Preprocessing cost side by side: this checkout's against another commit's, on the bench's sample images.

    python scripts/preprocess_cost.py --against 80a5904 [--seconds 4]

Loads the other commit's mnist_kit/worker/preprocess.py (from git) beside this one, then times both on each of the
bench's samples (a 28×28 PNG, a 280×280 canvas export, phone photos), alternating call by call so that both see the
same machine; prints the median milliseconds and the ratio. One core, as a worker runs.
"""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_kit.bench.costs import sample_images
from mnist_kit.worker import preprocess

ROOT = Path(__file__).resolve().parent.parent


def load_from(commit: str):
    source = subprocess.run(
        ["git", "show", f"{commit}:mnist_kit/worker/preprocess.py"], cwd=ROOT, capture_output=True, text=True
    )
    if source.returncode:
        sys.exit(f"error: {source.stderr.strip()}")
    path = Path(tempfile.mkdtemp()) / "preprocess_then.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("preprocess_then", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reader(module):
    """The whole preprocessing of one image file, under either commit's name for it."""
    return getattr(module, "read_image", None) or module.image_bytes_to_pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="A commit (or branch, tag) to compare with.")
    parser.add_argument("--seconds", type=float, default=4.0, help="Timing per image, for both together.")
    args = parser.parse_args()
    then, now = reader(load_from(args.against)), reader(preprocess)
    print(f"{'image':<24} {args.against:>10}  {'now':>8}  ratio")
    for name, data in sample_images().items():
        times = {then: [], now: []}
        for work in times:
            work(data)
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            for work, spent in times.items():
                start = time.perf_counter()
                work(data)
                spent.append(time.perf_counter() - start)
        before, after = (1000 * statistics.median(times[w]) for w in (then, now))
        print(f"{name:<24} {before:>7.3f} ms {after:>5.3f} ms  {after / before:.3f}")


if __name__ == "__main__":
    main()
