"""What serving one image costs in this process, beside the served figures: preprocessing per image type (and its
decoding alone, the floor under it), and a lone request's own work, back to back and after the core idles."""

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit.packaging import mar
from mnist_kit.worker import preprocess

# The sample 7, a canvas export and a phone photo of it (scripts/make_samples.py), shipped with the package.
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE = SAMPLES / "7.png"
# A lone request's work is timed back to back and after the core idles this long: about the gap between two
# requests of one client at concurrency 1.
IDLE_GAP_S = 0.003


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sample_images() -> dict[str, bytes]:
    """The image types docs/SERVING.md promises to handle fast."""
    photo = Image.open(SAMPLES / "photo.jpg")
    return {
        "28×28 PNG": SAMPLE.read_bytes(),
        "280×280 RGBA canvas PNG": (SAMPLES / "canvas.png").read_bytes(),
        "1000×750 JPEG": jpeg(photo.resize((1000, 750))),
        "4000×3000 JPEG": jpeg(photo.resize((4000, 3000))),
    }


def decode_only(data: bytes):
    """The image decoded as preprocessing decodes it (libpng for MNIST-format PNGs, else PIL), nothing more."""
    pixels = preprocess.mnist_png(data)
    return pixels if pixels is not None else preprocess.decode(data)


def timed(work, min_seconds: float, between=lambda: None, *, clock=time.perf_counter) -> list[float]:
    """Seconds per call of work(), for at least min_seconds and 20 calls, after one untimed call; between()
    runs untimed before each."""
    work()
    times = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(times) < 20:
        between()
        start = clock()
        work()
        times.append(clock() - start)
    return times


def preprocess_costs(min_seconds: float = 1.0) -> dict[str, dict]:
    """Median milliseconds per image of decode + preprocessing, and of the decode alone (the floor no
    preprocessing can go under), on one core (PIL and numpy are single-threaded)."""
    results = {}
    for name, data in sample_images().items():
        times = timed(lambda data=data: preprocess.read_image(data).pixels, min_seconds)
        decoding = timed(lambda data=data: decode_only(data), min_seconds / 2)
        results[name] = {
            "bytes": len(data),
            "ms_median": round(1000 * statistics.median(times), 3),
            "ms_p90": round(1000 * np.percentile(times, 90), 3),
            "decode_ms_median": round(1000 * statistics.median(decoding), 3),
            "runs": len(times),
        }
    return results


def lone_request_costs(archive: Path, form: str, body: Path = SAMPLE, *, min_seconds: float = 1.0) -> dict:
    """CPU milliseconds of a lone request's own work, in this process on one thread: decode `body`, normalise it,
    one forward pass of the archive's `form` (the one the server's workers chose). Back to back, and each call
    after the core idles for IDLE_GAP_S, as a worker does between lone requests. Where the second is several
    times the first, the work finds the core's caches and predictors cold (another tenant of a virtual machine's
    core, or the frontend and the other worker of this one, ran meanwhile): a cost a no-op handler hardly pays,
    and so a floor under the kit's p50 at concurrency 1 above the ceiling's. Empty for archives without forms."""
    from mnist_kit.worker import serving_forms

    archive = mar.read(archive)
    with tempfile.TemporaryDirectory() as tmp:
        archive.extract(tmp)
        if form not in serving_forms.read_manifest(tmp).get("forms", {}):
            return {}
        # One thread, as each worker runs (forms set it).
        model = serving_forms.load(tmp, str(Path(tmp, archive.serialized_file)), with_torch=True)[form]
        data = body.read_bytes()

        def work():
            model(preprocess.model_input([preprocess.read_image(data).pixels]))

        hot = timed(work, min_seconds, clock=time.thread_time)
        idle = timed(work, min_seconds, between=lambda: time.sleep(IDLE_GAP_S), clock=time.thread_time)
    return {
        "form": form,
        "idle_gap_ms": IDLE_GAP_S * 1000,
        "back_to_back_ms": round(1000 * statistics.median(hot), 3),
        "after_idle_ms": round(1000 * statistics.median(idle), 3),
    }
