"""The serving core's metrics are summed in the worker and reported once per interval (worker/metrics.py).

The report goes through the TorchServe adapter (mnist_handler.publish) to TorchServe's metrics cache, recorded here;
tests/test_operations.py checks that the same metrics reach Prometheus on a real TorchServe."""

import time

from harness import Recorded

from mnist_handler import publish
from mnist_kit.worker.metrics import MetricsWindow


def window_into(target: Recorded, interval: float) -> MetricsWindow:
    return MetricsWindow(lambda totals: publish(target, totals), interval=interval)


def test_counts_are_summed_between_reports():
    target = Recorded()
    window = window_into(target, 3600)
    window.add([7, 7, 1], [0.99, 0.5, 0.95], [], preprocessing_ms=3.0, requests=3)
    window.add([7], [0.999], ["blank", "blank"], preprocessing_ms=1.0, requests=3)
    window.report()
    assert sorted(target.reported, key=str) == sorted(
        [
            ("PredictionsPerDigit", 3, {"Digit": "7"}),
            ("PredictionsPerDigit", 1, {"Digit": "1"}),
            ("RejectedInputs", 2, {"Reason": "blank"}),
            ("LowConfidencePredictions", 1, {}),
            ("PreprocessingTime", round(4.0 / 6, 3), {}),
        ],
        key=str,
    )


def test_nothing_is_reported_twice_or_when_idle():
    target = Recorded()
    window = window_into(target, 3600)
    window.add([3], [0.99], [], preprocessing_ms=1.0, requests=1)
    window.report()
    window.report()
    assert [name for name, _, _ in target.reported] == ["PredictionsPerDigit", "PreprocessingTime"]


def test_the_background_thread_reports_without_further_requests():
    target = Recorded()
    window = window_into(target, 0.05)
    window.add([5], [0.99], [], preprocessing_ms=1.0, requests=1)
    deadline = time.monotonic() + 5
    while not target.reported and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("PredictionsPerDigit", 1, {"Digit": "5"}) in target.reported


def test_a_failed_report_does_not_end_the_reporting():
    class FailsOnce(Recorded):
        def add_counter(self, name, value, dimensions=()):
            if not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("metrics cache unavailable")
            super().add_counter(name, value, dimensions)

    target = FailsOnce()
    window = window_into(target, 0.05)
    window.add([5], [0.99], [], preprocessing_ms=1.0, requests=1)
    time.sleep(0.2)
    window.add([6], [0.99], [], preprocessing_ms=1.0, requests=1)
    deadline = time.monotonic() + 5
    while ("PredictionsPerDigit", 1, {"Digit": "6"}) not in target.reported and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("PredictionsPerDigit", 1, {"Digit": "6"}) in target.reported


def test_each_flag_is_counted_by_name():
    target = Recorded()
    window = window_into(target, 3600)
    window.add(
        [8, 4],
        [0.99, 0.12],
        [],
        preprocessing_ms=1.0,
        requests=2,
        flags=[["several_digits"], ["not_a_digit", "low_confidence"]],
    )
    window.report()
    flagged = {d["Flag"]: v for name, v, d in target.reported if name == "FlaggedPredictions"}
    assert flagged == {"several_digits": 1, "not_a_digit": 1, "low_confidence": 1}
