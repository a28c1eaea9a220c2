"""The kserve runtime's Prometheus metrics: the serving core's own (worker/metrics.py), as TorchServe publishes them,
and the runtime's per version and role (the default answers, a shadow only compares), on /metrics.

With several workers, the supervising process (server.py) gives them one folder in $PROMETHEUS_MULTIPROC_DIR before
they import prometheus_client: every worker writes its figures there, and /metrics (`exposition`) reads them all,
so a scrape adds up the workers whichever of them answers it. Counters are counted once per batch, and each request's
latency and each answered picture's confidence are one histogram observation: a few microseconds each. The drift
gauges (`Drifting`, over worker/drift.py) are measured and set at most once a second, from each worker's own window,
after the batch's replies are out.
"""

import logging
import os
from collections import Counter as Tally

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, exposition, multiprocess

from mnist_kit import constants as C
from mnist_kit.worker import drift

log = logging.getLogger(__name__)

# The core's own metrics, under TorchServe's names.
COUNTERS = {
    "PredictionsPerDigit": Counter("PredictionsPerDigit", "Answers per digit", ["Digit"]),
    "FlaggedPredictions": Counter("FlaggedPredictions", "Answers carrying each flag", ["Flag"]),
    "RejectedInputs": Counter("RejectedInputs", "Requests refused, by reason", ["Reason"]),
    "LowConfidencePredictions": Counter("LowConfidencePredictions", "Answers below the confidence threshold"),
}
# Over several workers: the latest figure any live worker reported, and each form a live worker serves.
PREPROCESSING_TIME = Gauge(
    "PreprocessingTime",
    "Milliseconds per request to decode, over the last interval",
    multiprocess_mode="livemostrecent",
)
SERVING_FORM = Gauge("ServingForm", "The form this worker serves (1)", ["Form"], multiprocess_mode="livemax")
BATCH_SIZE = Histogram("BatchSize", "Requests per forward pass", buckets=(1, 2, 4, 8, 12, 16))
QUEUE_TIME = Histogram(
    "QueueTime", "Milliseconds a batch's oldest request waited for it", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50)
)

# The runtime's, per version and role ("default": it answers; "shadow": it reads the same pictures, never answers).
PICTURES = Counter("mnist_kit_pictures", "Pictures answered (200), or compared by a shadow", ["version", "role"])
FLAGS = Counter(
    "mnist_kit_flags", "Pictures counted in mnist_kit_pictures that carried each flag", ["version", "role", "flag"]
)
REQUESTS = Counter(
    "mnist_kit_requests",
    "Requests answered, by status class (2xx, 4xx, 5xx); a shadow's: 2xx compared, 5xx its version failed",
    ["version", "role", "status_class"],
)
COMPARISONS = Counter(
    "mnist_kit_shadow_comparisons", "Pictures the shadow read beside the default", ["default_version", "shadow_version"]
)
DISAGREEMENTS = Counter(
    "mnist_kit_shadow_disagreements",
    "Pictures whose digit, or not_a_digit flag, differ between the default and the shadow",
    ["default_version", "shadow_version"],
)
DROPPED = Counter(
    "mnist_kit_shadow_dropped",
    "Disagreements not stored: the store's writer had too many waiting",
    ["default_version", "shadow_version"],
)
ANSWERS = Counter(
    "mnist_kit_answers", "Pictures counted in mnist_kit_pictures, by the digit answered", ["version", "role", "digit"]
)
CONFIDENCE = Histogram(
    "mnist_kit_confidence_ratio",
    "The confidence (top probability, 0..1) of each picture counted in mnist_kit_pictures",
    ["version", "role"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0),
)
REJECTED = Counter(
    "mnist_kit_rejected",
    "Requests refused, by reason: the serving core's (RejectedInputs's) for a 4xx, internal for a 5xx",
    ["version", "reason"],
)
# Over several workers: each worker scores its own window; the latest score of any live worker is shown.
DRIFT_PSI = Gauge(
    "mnist_kit_drift_psi",
    "Population stability index of a statistic of the pictures a version answered, against its training baseline",
    ["version", "statistic"],
    multiprocess_mode="livemostrecent",
)
DRIFT_PICTURES = Gauge(
    "mnist_kit_drift_window_pictures",
    "Pictures in the window behind mnist_kit_drift_psi",
    ["version"],
    multiprocess_mode="livemostrecent",
)
LATENCY = Histogram(
    "mnist_kit_request_seconds",
    "Seconds from a request's arrival at its version's batcher to its answer, per answering version",
    ["version"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def batched(size: int, waited_ms: float) -> None:
    BATCH_SIZE.observe(size)
    QUEUE_TIME.observe(waited_ms)


def publish(totals) -> None:
    """The serving core's totals of the last second (worker/metrics.py's MetricsWindow) into Prometheus's."""
    for m in totals:
        if m.name in COUNTERS:
            (COUNTERS[m.name].labels(**m.dimensions) if m.dimensions else COUNTERS[m.name]).inc(m.value)
        elif m.name == "PreprocessingTime":
            PREPROCESSING_TIME.set(m.value)
        elif m.name == "ServingForm":
            SERVING_FORM.labels(**m.dimensions).set(m.value)


class Counted:
    """One version's figures in one role, its labelled series looked up once: `answered` after each batch."""

    def __init__(self, version: str, role: str = "default"):
        self.version = version
        self.pictures = PICTURES.labels(version, role)
        self.flags = {flag: FLAGS.labels(version, role, flag) for flag in C.FLAGS}
        self.requests = {cls: REQUESTS.labels(version, role, cls) for cls in ("2xx", "4xx", "5xx")}
        self.answers = [ANSWERS.labels(version, role, str(digit)) for digit in range(C.NUM_CLASSES)]
        self.confidence = CONFIDENCE.labels(version, role)
        self.rejected: dict = {}  # by reason, as they come
        self.latency = LATENCY.labels(version) if role != "shadow" else None  # the versions that answer

    def answered(
        self,
        statuses: list[int],
        pictures: int,
        *,
        flags: list = (),
        waited: list[float] = (),
        read: list[tuple[int, float]] = (),
        reasons: list[str] = (),
    ) -> None:
        """A batch's replies: their statuses, the pictures of those answered 200 and each such picture's flags and
        digit and confidence (`read`, as Answer.read gives them), (the default's) how long each request took, in
        seconds, and why each refused one was (`reasons`, a 4xx's or "internal")."""
        classes = [status // 100 for status in statuses]
        for cls, name in ((2, "2xx"), (4, "4xx"), (5, "5xx")):
            count = classes.count(cls)
            if count:
                self.requests[name].inc(count)
        if pictures:
            self.pictures.inc(pictures)
        flagged = [flag for picture in flags for flag in picture]
        for flag, series in self.flags.items():
            count = flagged.count(flag)
            if count:
                series.inc(count)
        if read:
            for digit, count in Tally(digit for digit, _ in read).items():
                self.answers[digit].inc(count)
            for _, confidence in read:  # a histogram takes one at a time
                self.confidence.observe(confidence)
        if reasons:
            for reason, count in Tally(reasons).items():
                if reason not in self.rejected:
                    self.rejected[reason] = REJECTED.labels(self.version, reason)
                self.rejected[reason].inc(count)
        if self.latency is not None:
            for seconds in waited:
                self.latency.observe(seconds)


class Drifting:
    """One version's drift gauges over its live window (worker/drift.py's Drift against the archive's baseline):
    `add` keeps each batch's answered pictures; `publish`, when `due`, measures them and sets the gauges, which exist
    from the first time."""

    def __init__(self, version: str, baseline: drift.Baseline, **window):
        self.version, self.drift = version, drift.Drift(baseline, **window)
        self.psi: dict = {}
        self.failed = False

    def add(self, pixels: list, read: list[tuple[int, float]]) -> None:
        """The 28×28s the model read and their digits and confidences (Answer.read), of one batch's pictures
        answered 200."""
        self.drift.add(pixels, [digit for digit, _ in read], [confidence for _, confidence in read])

    def due(self) -> bool:
        return self.drift.due()

    def publish(self) -> None:
        """Measure what was kept and set the gauges. A failure costs the figures, never an answer: logged once."""
        try:
            scores = self.drift.scores()
        except Exception:
            if not self.failed:
                log.exception("the drift figures of version %s failed: they stay as they were", self.version)
            self.failed = True
            return
        for statistic, score in scores.items():
            if statistic not in self.psi:
                self.psi[statistic] = DRIFT_PSI.labels(self.version, statistic)
            self.psi[statistic].set(score)
        DRIFT_PICTURES.labels(self.version).set(len(self.drift.window))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def exposition_of_all_workers(accept: str | None) -> tuple[bytes, str]:
    """/metrics summed over the workers' files in $PROMETHEUS_MULTIPROC_DIR (what a scrape of any worker reads), in
    the format the scraper accepts; this process's own registry where there is no such folder."""
    registry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    encoder, content_type = exposition.choose_encoder(accept)
    return encoder(registry), content_type
