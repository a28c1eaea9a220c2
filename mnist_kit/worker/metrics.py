"""The handler's own metrics, summed in the worker and reported to TorchServe once a second.

Each metric TorchServe receives is a log line that the worker writes and the frontend parses; reported per
batch, they cost more than preprocessing a 28×28 PNG and sat on the request's path. Prometheus sees the same
totals. Packed into the .mar beside the handler (TorchServe wants exactly one class in the handler's file).
"""

import logging
import threading
import time
from collections import Counter

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

from mnist_kit import constants as C


class MetricsWindow:
    """PredictionsPerDigit{Digit}, LowConfidencePredictions, FlaggedPredictions{Flag}, RejectedInputs{Reason}
    (counters), PreprocessingTime (ms per request, averaged over the interval) and ServingForm{Form} (a gauge at 1: the
    form this worker chose, mnist_kit.worker.forms), reported by a daemon thread."""

    def __init__(self, metrics, interval: float = C.METRICS_INTERVAL_S, serving_form: str | None = None):
        self.target, self.interval, self.lock = metrics, interval, threading.Lock()
        self.serving_form = serving_form
        self._reset()
        threading.Thread(target=self._report_forever, name="mnist-metrics", daemon=True).start()

    def _reset(self) -> None:
        self.digits, self.rejected, self.flags = Counter(), Counter(), Counter()
        self.low_confidence = self.images = 0
        self.preprocessing_ms = 0.0

    def add(
        self,
        digits: list[int],
        confidences: list[float],
        rejected: list[str],
        preprocessing_ms: float,
        images: int,
        *,
        flags: list[list[str]] = (),
    ) -> None:
        with self.lock:
            self.digits.update(digits)
            self.flags.update(flag for answer in flags for flag in answer)
            self.rejected.update(rejected)
            self.low_confidence += sum(c < C.LOW_CONFIDENCE for c in confidences)
            self.preprocessing_ms += preprocessing_ms
            self.images += images

    def report(self) -> None:
        with self.lock:
            digits, rejected, flags, low, ms, images = (
                self.digits,
                self.rejected,
                self.flags,
                self.low_confidence,
                self.preprocessing_ms,
                self.images,
            )
            self._reset()
        for digit, count in digits.items():
            self.target.add_counter("PredictionsPerDigit", count, dimensions=[Dimension("Digit", str(digit))])
        for flag, count in flags.items():
            self.target.add_counter("FlaggedPredictions", count, dimensions=[Dimension("Flag", flag)])
        for reason, count in rejected.items():
            self.target.add_counter("RejectedInputs", count, dimensions=[Dimension("Reason", reason)])
        if low:
            self.target.add_counter("LowConfidencePredictions", low)
        if images:
            self.target.add_time("PreprocessingTime", round(ms / images, 3))
        if self.serving_form:
            self.target.add_metric(
                "ServingForm",
                1,
                "count",
                dimensions=[Dimension("Form", self.serving_form)],
                metric_type=MetricTypes.GAUGE,
            )

    def _report_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.report()
            except Exception:  # one failed report must not end the reporting
                logging.exception("reporting the handler's metrics failed")
