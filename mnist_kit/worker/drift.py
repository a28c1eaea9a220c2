"""Input drift: a few cheap statistics of the pictures a version answers, against the same statistics of what its
model was trained on, as a population stability index (PSI) per statistic.

The archive carries the baseline (C.DRIFT_BASELINE_FILE: MNIST training images through the serving preprocessing and
the float model, binned, packaging/archive.py); a runtime keeps the last C.DRIFT_WINDOW pictures a version answered
(`Drift`: kept per batch, measured and scored at most every C.DRIFT_INTERVAL_S). The statistics read the 28×28 the
model read and its answer: a few array reductions over many pictures at once. Numpy only, and no server: packed into
the .mar beside the handler, so either runtime can keep it.
"""

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from mnist_kit import constants as C

# What each picture is measured by (the `statistic` label of mnist_kit_drift_psi):
# - ink_share: the share of the 28×28's pixels holding any ink (0..1);
# - faint_share: the share of those below C.DRIFT_FAINT_LEVEL (0..1): the soft edges of MNIST's scanned pen strokes,
#   which a photo's or a canvas's ink, cleaned and stretched by the preprocessing, lacks;
# - stroke_width: pixels, twice the solid area (ink at C.DRIFT_INK_LEVEL or more) over its outline's length;
# - confidence: the answer's top probability;
# - digit: the digit answered.
STATISTICS = ("ink_share", "faint_share", "stroke_width", "confidence", "digit")
# Bins fixed whatever the baseline: the digits one each; the confidence at C.DRIFT_CONFIDENCE_CUTS, since it piles up
# near 1, where quantile bins would split hairs that each serving form rounds its own way.
FIXED_CUTS = {"confidence": C.DRIFT_CONFIDENCE_CUTS, "digit": tuple(d + 0.5 for d in range(C.NUM_CLASSES - 1))}

log = logging.getLogger(__name__)


def statistics(pixels: np.ndarray, digits, confidences) -> np.ndarray:
    """N uint8 28×28 pictures as the model read them, the digits and confidences answered → N rows of STATISTICS."""
    pixels = np.asarray(pixels)

    def count(mask: np.ndarray) -> np.ndarray:  # per picture; bytes summed, five times faster than booleans
        return mask.reshape(len(pixels), -1).view(np.uint8).sum(1, dtype=np.uint16)

    inked = count(pixels > 0)
    solid = np.zeros((len(pixels), pixels.shape[1] + 2, pixels.shape[2] + 2), dtype=bool)  # in a clear frame
    solid[:, 1:-1, 1:-1] = pixels >= C.DRIFT_INK_LEVEL
    # The outline: every side of a solid pixel that faces a clear one; side by side along the rows read one after
    # another (a row's frame meets the next row's), one above the other between rows.
    along = solid.reshape(len(pixels), -1)
    outline = count(along[:, 1:] != along[:, :-1]) + count(solid[:, 1:] != solid[:, :-1])
    return np.column_stack(
        [
            inked / pixels[0].size,
            (inked - count(pixels >= C.DRIFT_FAINT_LEVEL)) / np.maximum(inked, 1),
            2.0 * count(solid) / np.maximum(outline, 1),
            np.asarray(confidences, dtype=np.float64),
            np.asarray(digits, dtype=np.float64),
        ]
    )


def shares(values: np.ndarray, cuts) -> np.ndarray:
    """The share of `values` in each bin between `cuts` (len(cuts) + 1 bins; a value on a cut goes above it)."""
    counts = np.bincount(np.searchsorted(np.asarray(cuts), values, side="right"), minlength=len(cuts) + 1)
    return counts / max(len(values), 1)


def psi(expected, actual, epsilon: float = C.DRIFT_EPSILON) -> float:
    """The population stability index of `actual` bin shares against `expected`: Σ (a − e) · ln(a / e), an empty
    bin counted as `epsilon`. 0 for the same shares; under 0.1 read as no change, over 0.25 as a real one."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(((a - e) * np.log(a / e)).sum())


@dataclass
class Baseline:
    """Each statistic's bins (`cuts`, their inner edges) and the share of the baseline's pictures in each."""

    cuts: dict[str, list[float]]
    shares: dict[str, list[float]]
    pictures: int

    @classmethod
    def of(cls, rows: np.ndarray, bins: int = C.DRIFT_BINS) -> "Baseline":
        """From rows of STATISTICS: quantile bins (`bins` of them, fewer where values repeat), or FIXED_CUTS."""
        cuts, found = {}, {}
        for k, name in enumerate(STATISTICS):
            if name in FIXED_CUTS:
                edges = list(FIXED_CUTS[name])
            else:
                edges = np.unique(np.quantile(rows[:, k], np.arange(1, bins) / bins)).tolist()
            cuts[name], found[name] = edges, shares(rows[:, k], edges).tolist()
        return cls(cuts, found, len(rows))

    def scores(self, rows: np.ndarray) -> dict[str, float]:
        """The PSI of each statistic of `rows` against this baseline."""
        return {
            name: psi(self.shares[name], shares(rows[:, k], self.cuts[name]))
            for k, name in enumerate(STATISTICS)
            if name in self.cuts
        }

    def to_json(self) -> str:
        found = {name: {"cuts": self.cuts[name], "shares": self.shares[name]} for name in self.cuts}
        return json.dumps({"statistics": found, "pictures": self.pictures}, indent=1) + "\n"

    @classmethod
    def load(cls, model_dir) -> "Baseline | None":
        """The baseline an unpacked archive carries; None where it has none (an older archive), or an unreadable
        one, said in the log: drift is a figure beside serving, never a reason not to serve."""
        path = os.path.join(model_dir, C.DRIFT_BASELINE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                document = json.load(f)
            found = document["statistics"]
            return cls(
                {n: [float(c) for c in s["cuts"]] for n, s in found.items() if n in STATISTICS},
                {n: [float(v) for v in s["shares"]] for n, s in found.items() if n in STATISTICS},
                int(document["pictures"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("no drift figures: %s is unreadable (%s: %s)", path, type(e).__name__, e)
            return None


class Window:
    """The statistics of the last `size` pictures added, in a ring."""

    def __init__(self, size: int = C.DRIFT_WINDOW):
        self.rows = np.zeros((size, len(STATISTICS)))
        self.next = self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def add(self, rows: np.ndarray) -> None:
        size = len(self.rows)
        rows = rows[-size:]
        first = min(len(rows), size - self.next)
        self.rows[self.next : self.next + first] = rows[:first]
        self.rows[: len(rows) - first] = rows[first:]
        self.next = (self.next + len(rows)) % size
        self.filled = min(size, self.filled + len(rows))

    def values(self) -> np.ndarray:
        """The rows held, in no particular order (a PSI needs none)."""
        return self.rows[: self.filled]


class Drift:
    """One version's live window against its baseline. `add` keeps each batch's answered pictures as they are (a
    list append: nothing measured on the request's path); when `due` (at least `minimum` pictures, at most once per
    `interval` seconds, something new since the last), `scores` measures the newest window's worth of what was kept
    in one numpy pass, adds it to the window and scores the window."""

    def __init__(
        self,
        baseline: Baseline,
        size: int = C.DRIFT_WINDOW,
        minimum: int = C.DRIFT_MIN_PICTURES,
        *,
        interval: float = C.DRIFT_INTERVAL_S,
    ):
        self.baseline, self.window = baseline, Window(size)
        self.minimum, self.interval = min(minimum, size), interval
        self.last = -float("inf")
        self.pixels, self.digits, self.confidences = [], [], []  # kept, not yet measured

    def add(self, pixels: list, digits: list, confidences: list) -> None:
        """Pictures as the model read them (28×28 uint8 each), with the digit and confidence answered for each."""
        self.pixels += pixels
        self.digits += digits
        self.confidences += confidences
        size = len(self.window.rows)
        if len(self.pixels) > 2 * size:  # more than a window between two scores: only the newest count
            del self.pixels[:-size], self.digits[:-size], self.confidences[:-size]

    def due(self) -> bool:
        kept = len(self.pixels)
        return kept > 0 and len(self.window) + kept >= self.minimum and time.monotonic() - self.last >= self.interval

    def scores(self) -> dict[str, float]:
        """The PSI of each statistic of the window, once what was kept is measured into it."""
        pixels, digits, confidences = self.pixels, self.digits, self.confidences
        self.pixels, self.digits, self.confidences, self.last = [], [], [], time.monotonic()
        if pixels:
            size = len(self.window.rows)  # the newest window's worth: older ones would leave it at once
            self.window.add(statistics(np.stack(pixels[-size:]), digits[-size:], confidences[-size:]))
        return self.baseline.scores(self.window.values())
