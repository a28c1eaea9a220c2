"""The kserve runtime's Prometheus metrics: the serving core's own (worker/metrics.py), as TorchServe publishes them,
and the runtime's per version and role (the default answers, a shadow only compares), on /metrics.

With several workers, the supervising process (server.py) gives them one folder in $PROMETHEUS_MULTIPROC_DIR before
they import prometheus_client: every worker writes its figures there, and /metrics (`exposition`) reads them all,
so a scrape adds up the workers whichever of them answers it. Counters are counted once per batch, and each request's
latency is one histogram observation: a few microseconds a request.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, exposition, multiprocess

from mnist_kit import constants as C

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
        self.pictures = PICTURES.labels(version, role)
        self.flags = {flag: FLAGS.labels(version, role, flag) for flag in C.FLAGS}
        self.requests = {cls: REQUESTS.labels(version, role, cls) for cls in ("2xx", "4xx", "5xx")}
        self.latency = LATENCY.labels(version) if role != "shadow" else None  # the versions that answer

    def answered(self, statuses: list[int], pictures: int, *, flags: list = (), waited: list[float] = ()) -> None:
        """A batch's replies: their statuses, the pictures of those answered 200 and each such picture's flags, and
        (the default's) how long each request took, in seconds."""
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
        if self.latency is not None:
            for seconds in waited:
                self.latency.observe(seconds)


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
