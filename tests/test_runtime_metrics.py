"""The kserve runtime's figures for a dashboard (serving/kserve/metrics.py): the pictures each version answered by
digit and by confidence, the requests it refused by reason, and the input drift of the pictures it answered against
its archive's baseline. In process, on real cores with random weights, as tests/test_shadow.py runs them."""

import io
import json
import os
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY, CollectorRegistry
from test_shadow import PICTURES, PNG, Served, app_of, ask, figure, random_core, v2_body

from mnist_kit.packaging import archive, mar
from mnist_kit.serving.kserve import metrics
from mnist_kit.serving.kserve.routing import Routing
from mnist_kit.worker import drift
from mnist_kit.worker.core import Batch

JSON = ("content-type", "application/json")


@pytest.fixture(scope="module")
def cores(tmp_path_factory) -> dict:
    """Versions of their own (their figures apart from other tests'): 3.0 and 4.0 on different random weights, 5.0
    on 3.0's."""
    folder = tmp_path_factory.mktemp("metric_versions")
    return {v: random_core(folder / v, v, seed=seed) for v, seed in (("3.0", 0), ("4.0", 1), ("5.0", 0))}


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (28, 28), 255).save(out, "PNG")
    return out.getvalue()


def alone(core, bodies: list[tuple[bytes, dict]]):
    """What the core answers for these bodies (and headers) by itself: its batch and its replies."""
    batch = core.infer(core.decode([{"body": body} for body, _ in bodies], [headers for _, headers in bodies]))
    return batch, core.encode(batch)


@pytest.mark.unit
def test_each_answered_picture_counts_under_its_digit_and_its_confidence(cores):
    app = app_of(Served([cores["3.0"]]))
    labels = {"version": "3.0", "role": "default"}
    batch, _ = alone(cores["3.0"], [(p, dict([PNG])) for p in [*PICTURES, *PICTURES[2:5]]])
    digits = Counter(a.digit for a in batch.answers)
    confidences = [a.confidence for a in batch.answers]
    names = [("mnist_kit_answers_total", {**labels, "digit": str(d)}) for d in range(10)]
    names += [(f"mnist_kit_confidence_ratio_{part}", labels) for part in ("count", "sum")]
    names += [("mnist_kit_confidence_ratio_bucket", {**labels, "le": "0.5"})]
    before = [figure(name, **l) for name, l in names]
    requests = [("/predictions/mnist", [PNG], picture) for picture in PICTURES]
    requests += [("/v2/models/mnist/infer", [JSON], v2_body(PICTURES[2:5])), ("/predictions/mnist", [PNG], b"no")]
    ask(app, requests)
    after = [figure(name, **l) for name, l in names]
    grown = [a - b for a, b in zip(after, before)]
    assert grown[:10] == [digits[d] for d in range(10)]
    assert grown[10] == 13 and grown[11] == pytest.approx(sum(confidences))
    assert grown[12] == sum(c <= 0.5 for c in confidences)


@pytest.mark.unit
def test_refused_requests_count_by_their_reason_and_answered_ones_not_at_all(cores):
    app = app_of(Served([cores["4.0"]]))
    bodies = [(b"not an image", dict([PNG])), (blank_png(), dict([PNG])), (b'{"data": 3}', dict([JSON]))]
    _, replies = alone(cores["4.0"], bodies)
    assert [r.reason for r in replies] == ["undecodable", "blank", "bad_json"]
    reasons = ["undecodable", "blank", "bad_json", "invalid", "internal"]
    before = {r: figure("mnist_kit_rejected_total", version="4.0", reason=r) for r in reasons}
    sent = [("/predictions/mnist", [PNG], b"not an image"), ("/predictions/mnist", [PNG], blank_png())]
    sent += [("/predictions/mnist", [JSON], b'{"data": 3}'), ("/predictions/mnist", [PNG], b"not an image")]
    ask(app, [*sent, *[("/predictions/mnist", [PNG], picture) for picture in PICTURES]])
    grown = {r: figure("mnist_kit_rejected_total", version="4.0", reason=r) - before[r] for r in reasons}
    assert grown == {"undecodable": 2, "blank": 1, "bad_json": 1, "invalid": 0, "internal": 0}


@pytest.mark.unit
def test_a_refused_reply_carries_its_reason_beside_an_unchanged_body(cores):
    _, (reply,) = alone(cores["3.0"], [(blank_png(), dict([PNG]))])
    assert reply.reason == "blank" and reply.status == 400
    assert reply.body == {"code": 400, "type": "BadRequestException", "message": "blank image: no digit found"}


@pytest.mark.unit
def test_a_batch_that_fails_counts_each_of_its_requests_refused_as_internal():
    def fail(batch: Batch) -> Batch:
        raise RuntimeError("a bug of ours")

    broken = SimpleNamespace(model_version="9.1", decode=lambda rows, headers: Batch([]), infer=fail, encode=None)
    before = figure("mnist_kit_rejected_total", version="9.1", reason="internal")
    replies = ask(app_of(Served([broken])), [("/predictions/mnist", [PNG], p) for p in PICTURES[:3]])
    assert {status for status, _, _ in replies} == {500}
    assert figure("mnist_kit_rejected_total", version="9.1", reason="internal") - before == 3


@pytest.mark.unit
def test_a_canarys_answers_count_in_role_canary_under_its_version(cores):
    app = app_of(Served([cores["3.0"], cores["4.0"]], routing=Routing("3.0", "4.0", "canary", 1.0)))
    canary = {"version": "4.0", "role": "canary"}

    def answered() -> float:
        return sum(figure("mnist_kit_answers_total", **canary, digit=str(d)) for d in range(10))

    before = answered(), figure("mnist_kit_confidence_ratio_count", **canary)
    ask(app, [("/predictions/mnist", [PNG], picture) for picture in PICTURES])
    assert (answered() - before[0], figure("mnist_kit_confidence_ratio_count", **canary) - before[1]) == (10, 10)


def live_statistics(core, pictures: list[bytes]) -> np.ndarray:
    """The drift statistics of what `core` reads and answers for `pictures`."""
    batch, _ = alone(core, [(p, dict([PNG])) for p in pictures])
    pixels = np.stack([picture.pixels for picture in batch.pictures])
    return drift.statistics(pixels, [a.digit for a in batch.answers], [a.confidence for a in batch.answers])


@pytest.mark.unit
def test_the_drift_gauges_score_the_live_pictures_a_version_answered(cores):
    served = Served([cores["5.0"]])
    baseline = drift.Baseline.of(live_statistics(cores["5.0"], PICTURES))  # the very pictures sent: scores 0
    served.versions["5.0"].batcher.drift = metrics.Drifting("5.0", baseline, size=50, minimum=10, interval=0)
    app = app_of(served)
    ask(app, [("/predictions/mnist", [PNG], picture) for picture in PICTURES[:6]])
    assert figure("mnist_kit_drift_window_pictures", version="5.0") == 0  # fewer than 10: no score yet
    ask(app, [("/predictions/mnist", [PNG], picture) for picture in [*PICTURES[6:], b"not an image"]])
    scores = {s: figure("mnist_kit_drift_psi", version="5.0", statistic=s) for s in drift.STATISTICS}
    assert figure("mnist_kit_drift_window_pictures", version="5.0") == 10
    assert scores == pytest.approx(dict.fromkeys(drift.STATISTICS, 0.0), abs=1e-9)
    ask(app, [("/predictions/mnist", [PNG], picture) for picture in [*PICTURES] * 2])
    assert figure("mnist_kit_drift_window_pictures", version="5.0") == 30


@pytest.mark.unit
def test_requests_naming_a_version_are_answered_but_left_out_of_its_drift_window(cores):
    served = Served([cores["3.0"]])
    tracked = metrics.Drifting("3.0", drift.Baseline.of(live_statistics(cores["3.0"], PICTURES)), size=50)
    served.versions["3.0"].batcher.drift = tracked
    replies = ask(app_of(served), [("/predictions/mnist/3.0", [PNG], picture) for picture in PICTURES])
    assert {status for status, _, _ in replies} == {200}
    assert len(tracked.drift.window) == len(tracked.drift.pixels) == 0


@pytest.mark.unit
def test_an_archive_carries_its_drift_baseline_only_when_built_with_mnist_at_hand(
    untrained_checkpoint, data_dir, tmp_path
):
    """What the runtime's load reads (MnistModel.load: a drift window where Baseline.load finds one). MnistModel
    itself is not imported here: kserve's gRPC protos clash with tritonclient's in one process (the real runtime's
    drift gauges are checked in tests/test_alerting.py)."""
    with_one = archive.build(untrained_checkpoint, tmp_path, mode="eager", data_dir=data_dir)
    without = archive.build(untrained_checkpoint, tmp_path, mode="eager", version="2.0", data_dir=tmp_path / "none")
    found = {}
    for built in (with_one, without):
        folder = mar.read(built).extract(tmp_path / built.stem)
        found[built.name] = drift.Baseline.load(str(folder))
    assert isinstance(found[with_one.name], drift.Baseline) and found[without.name] is None


# --- histograms counted a batch at a time

HISTOGRAM_SCRIPT = """
import json, os, sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from mnist_kit.serving.kserve import metrics

values = json.loads(sys.argv[1])
batched = metrics.BatchHistogram("kit_test_seconds", "a test", ["version"], buckets=(0.1, 0.5, 1))
for start in range(0, len(values), 7):  # batches of 7
    batched.labels("1.0").observe_all(values[start : start + 7])
reference = CollectorRegistry()  # under another name: with a workers' folder, its values go there too
one_by_one = Histogram("kit_reference_seconds", "a test", ["version"], buckets=(0.1, 0.5, 1), registry=reference)
for value in values:
    one_by_one.labels("1.0").observe(value)

def shown(text, name):
    return sorted(
        (s.name.replace(name, "NAME"), sorted(s.labels.items()), round(s.value, 9))
        for f in text_string_to_metric_families(text) if f.name == name
        for s in f.samples if not s.name.endswith("_created")
    )

ours = shown(metrics.exposition_of_all_workers(None)[0].decode(), "kit_test_seconds")
print(json.dumps([ours, shown(generate_latest(reference).decode(), "kit_reference_seconds")]))
"""


@pytest.mark.unit
@pytest.mark.parametrize("workers_folder", [False, True], ids=["one process", "workers' folder"])
def test_a_batch_histogram_shows_on_metrics_what_prometheus_clients_histogram_shows_for_the_same_values(
    workers_folder, tmp_path
):
    """Through /metrics's own exposition, with and without $PROMETHEUS_MULTIPROC_DIR (read when prometheus_client
    is imported: a process of its own)."""
    values = [0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.5, 0.0, 0.1000001, 9.0] * 3
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)} if workers_folder else dict(os.environ)
    if not workers_folder:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", HISTOGRAM_SCRIPT, json.dumps(values)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ours, reference = json.loads(done.stdout)
    assert ours == reference and len(ours) == 6  # 4 buckets, _count and _sum


LES = ("0.1", "1.0", "+Inf")


@pytest.mark.unit
def test_a_batch_histogram_shows_every_bucket_at_0_before_its_first_value():
    series = metrics.BatchHistogram("kit_empty_seconds", "a test", ["version"], buckets=(0.1, 1)).labels("1.0")
    shown = CollectorRegistry()
    shown.register(metrics.AsHistograms(REGISTRY))
    assert [
        shown.get_sample_value("kit_empty_seconds_bucket", {"version": "1.0", "le": le})
        for le in ("0.1", "1.0", "+Inf")
    ] == [0, 0, 0]
    series.observe_all([0.5, 0.5])
    assert shown.get_sample_value("kit_empty_seconds_bucket", {"version": "1.0", "le": "1.0"}) == 2
    assert shown.get_sample_value("kit_empty_seconds_count", {"version": "1.0"}) == 2
