"""Latency percentiles of requests the kit's own client timed (the A/B test, the rollout scenarios); `mnist-kit
bench` takes wrk's."""

import statistics


def percentiles(ms: list[float]) -> dict:
    """{"p50_ms", "p99_ms"} of `ms` (None without any): the median, and the 99th percentile by nearest rank below."""
    if not ms:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
    }
