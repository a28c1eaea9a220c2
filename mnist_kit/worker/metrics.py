"""The serving core's own metrics, summed in the worker and handed to the runtime once a second.

A runtime's metrics call per batch costs more than preprocessing a 28×28 PNG (TorchServe's is a log line the
frontend parses) and would sit on the request's path, so the window sums them here and a daemon thread hands the
totals to `publish`, the runtime adapter's function (mnist_handler.publish for TorchServe). Prometheus sees the
same totals. Imports no server. Packed into the .mar beside the handler.
"""

import logging
import threading
import time
from collections import Counter
from typing import NamedTuple

from mnist_kit import constants as C


class Metric(NamedTuple):
    """One reported total: kind is "counter", "time" (milliseconds) or "gauge"."""

    name: str
    kind: str
    value: float
    dimensions: dict


class MetricsWindow:
    """PredictionsPerDigit{Digit}, LowConfidencePredictions, FlaggedPredictions{Flag}, RejectedInputs{Reason}
    (counters), PreprocessingTime (ms per request, averaged over the interval) and ServingForm{Form} (a gauge at 1: the
    form this worker chose, serving_forms.py), handed to publish(list of Metric) by a daemon thread."""

    def __init__(self, publish, interval: float = C.METRICS_INTERVAL_S, serving_form: str | None = None):
        self.publish, self.interval, self.lock = publish, interval, threading.Lock()
        self.serving_form = serving_form
        self._reset()
        threading.Thread(target=self._report_forever, name="mnist-metrics", daemon=True).start()

    def _reset(self) -> None:
        self.digits, self.rejected, self.flags = Counter(), Counter(), Counter()
        self.low_confidence = self.requests = 0
        self.preprocessing_ms = 0.0

    def add(
        self,
        digits: list[int],
        confidences: list[float],
        rejected: list[str],
        *,
        preprocessing_ms: float,
        requests: int,
        flags: list[list[str]] = (),
    ) -> None:
        """One batch: its answers' digits, confidences and flags, its rejected requests' reasons, and the time its
        `requests` took to decode."""
        with self.lock:
            self.digits.update(digits)
            self.flags.update(flag for answer in flags for flag in answer)
            self.rejected.update(rejected)
            self.low_confidence += sum(c < C.LOW_CONFIDENCE for c in confidences)
            self.preprocessing_ms += preprocessing_ms
            self.requests += requests

    def totals(self) -> list[Metric]:
        """What was added since the last call, as Metrics; the window starts again from zero."""
        with self.lock:
            digits, rejected, flags = self.digits, self.rejected, self.flags
            low, ms, requests = self.low_confidence, self.preprocessing_ms, self.requests
            self._reset()
        found = [Metric("PredictionsPerDigit", "counter", n, {"Digit": str(d)}) for d, n in digits.items()]
        found += [Metric("FlaggedPredictions", "counter", n, {"Flag": flag}) for flag, n in flags.items()]
        found += [Metric("RejectedInputs", "counter", n, {"Reason": reason}) for reason, n in rejected.items()]
        if low:
            found.append(Metric("LowConfidencePredictions", "counter", low, {}))
        if requests:
            found.append(Metric("PreprocessingTime", "time", round(ms / requests, 3), {}))
        if self.serving_form:
            found.append(Metric("ServingForm", "gauge", 1, {"Form": self.serving_form}))
        return found

    def report(self) -> None:
        self.publish(self.totals())

    def _report_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.report()
            except Exception:  # one failed report must not end the reporting
                logging.exception("reporting the serving core's metrics failed")
