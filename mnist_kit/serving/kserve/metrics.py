"""The kserve runtime's Prometheus metrics: the serving core's own (worker/metrics.py), as TorchServe publishes them,
and the runtime's per version and role (the default answers, a shadow only compares), on /metrics.

With several workers, the supervising process (server.py) gives them one folder in $PROMETHEUS_MULTIPROC_DIR before
they import prometheus_client: every worker writes its figures there, and /metrics (`exposition`) reads them all, so a
scrape adds up the workers whichever of them answers it. Counters are counted once per batch, and so are the
histograms of each request's latency and each answered picture's confidence (`BatchHistogram`: a few counter
additions a batch, where prometheus_client's Histogram takes two a value, a few microseconds each). The drift
gauges (`Drifting`, over worker/drift.py) are measured and set at most every C.DRIFT_INTERVAL_S, from each worker's
own window, after the batch's replies are out.
"""

import bisect
import logging
import os
from collections import Counter as Tally

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, exposition, multiprocess
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from mnist_kit import constants as C
from mnist_kit.worker import drift

log = logging.getLogger(__name__)


class BatchHistogram:
    """A Prometheus histogram observed a batch of values at a time: each bucket's count and the sum kept in counters
    (`<name>_in_bucket`, `<name>_summed`, never shown as such), which /metrics (`exposition_of_all_workers`) shows
    as the histogram `name`, exactly as prometheus_client's Histogram shows the same values (bucket by bucket,
    cumulative, with _sum and _count). prometheus_client observes one value at a time, and its maintainers point
    pre-counted buckets to a custom collector (client_python#733, #911); this is that, through the multiprocess
    files every worker writes."""

    def __init__(self, name: str, documentation: str, labelnames: list[str], *, buckets: tuple[float, ...]):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = [float(b) for b in buckets] + [float("inf")]
        self.edges = [floatToGoString(b) for b in self.bounds]
        self.counted, self.summed = f"{name}_in_bucket", f"{name}_summed"
        self.counts = Counter(self.counted, documentation, [*labelnames, "le"])
        self.sums = Counter(self.summed, documentation, labelnames)
        HISTOGRAMS[self.counted] = HISTOGRAMS[self.summed] = self

    def labels(self, *values: str) -> "BatchHistogram.Child":
        return BatchHistogram.Child(self, values)

    class Child:
        """One series: its buckets' counters and its sum's, looked up once."""

        def __init__(self, histogram: "BatchHistogram", values: tuple):
            self.histogram = histogram
            self.sum = histogram.sums.labels(*values)
            # Every bucket shown from the start, at 0, as a Histogram's.
            self.buckets = {le: histogram.counts.labels(*values, le) for le in histogram.edges}

        def observe_all(self, values: list[float]) -> None:
            """Each of `values` in the first bucket whose bound it does not exceed, as Histogram.observe."""
            if not values:
                return
            bounds, edges = self.histogram.bounds, self.histogram.edges
            if len(values) == 1:  # c=1's every batch: no tally
                self.buckets[edges[bisect.bisect_left(bounds, values[0])]].inc(1)
            else:
                for index, count in Tally(bisect.bisect_left(bounds, v) for v in values).items():
                    self.buckets[edges[index]].inc(count)
            self.sum.inc(sum(values))

    def family(self, counted: list, summed: list) -> HistogramMetricFamily:
        """The histogram from its counters' samples (summed over the workers): buckets made cumulative."""
        found = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        per_series: dict[tuple, dict[str, float]] = {}
        for sample in counted:
            key = tuple(sample.labels[label] for label in self.labelnames)
            per_series.setdefault(key, {})[sample.labels["le"]] = sample.value
        sums = {tuple(sample.labels[label] for label in self.labelnames): sample.value for sample in summed}
        for key in sorted(per_series.keys() | sums.keys()):
            counts, total = per_series.get(key, {}), 0.0
            buckets = []
            for le in self.edges:
                total += counts.get(le, 0.0)
                buckets.append((le, total))
            found.add_metric(list(key), buckets, sums.get(key, 0.0))
        return found


HISTOGRAMS: dict[str, BatchHistogram] = {}  # by the name of each of its counters


class AsHistograms:
    """A collector showing `source`'s families, each BatchHistogram's two counters as the one histogram."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        held: dict[str, dict[str, list]] = {}
        for family in self.source.collect():
            histogram = HISTOGRAMS.get(family.name)
            if histogram is None:
                yield family
                continue
            part = "counted" if family.name == histogram.counted else "summed"
            samples = [sample for sample in family.samples if sample.name.endswith("_total")]
            held.setdefault(histogram.counted, {"counted": [], "summed": []})[part] = samples
        for name, parts in held.items():
            yield HISTOGRAMS[name].family(parts["counted"], parts["summed"])


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
CONFIDENCE = BatchHistogram(
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
LATENCY = BatchHistogram(
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
            self.confidence.observe_all([confidence for _, confidence in read])
        if reasons:
            for reason, count in Tally(reasons).items():
                if reason not in self.rejected:
                    self.rejected[reason] = REJECTED.labels(self.version, reason)
                self.rejected[reason].inc(count)
        if self.latency is not None:
            self.latency.observe_all(list(waited))


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
    the format the scraper accepts; this process's own registry where there is no such folder. Batch histograms
    shown as histograms either way."""
    source = multiprocess.MultiProcessCollector(None) if multiprocess_dir() else REGISTRY
    registry = CollectorRegistry()
    registry.register(AsHistograms(source))
    encoder, content_type = exposition.choose_encoder(accept)
    return encoder(registry), content_type
