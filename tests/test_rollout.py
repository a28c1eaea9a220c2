"""Nothing lost when a replica stops, restarts or is replaced: the image's entrypoint drains on a stop signal, the
kserve runtime does too, the kit's client retries what a restarting server could not answer (never bad input), and a
rolling update of real replicas behind a real HAProxy, under load, loses no request."""

import io
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from conftest import ROOT, TINY_INT8_DROP
from harness import RuntimeServer
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.deploy import export, proxy, rollout
from mnist_kit.packaging import archive
from mnist_kit.serving import client
from mnist_kit.serving.kserve.launcher import PrivateKServe
from mnist_kit.serving.processes import free_port


def status(url: str) -> int:
    try:
        client.request(url, timeout=5)
        return 200
    except client.ClientError as e:
        return e.status


class Sender:
    """Threads predicting through `url` until told to stop, as clients behind an endpoint controller would: each
    result kept."""

    def __init__(self, url: str, body: bytes, threads: int = 8):
        self.url, self.body, self.results, self.stopped = url, body, [], threading.Event()
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self.run) for _ in range(threads)]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.results.append(client.predict(self.body, url=self.url, retries=0)["digit"])
            except client.ClientError as e:
                self.results.append(str(e))

    def stop(self) -> list:
        self.stopped.set()
        for future in self.futures:
            future.result(timeout=60)
        self.pool.shutdown()
        return self.results


@pytest.fixture
def container(model_store, tmp_path):
    """TorchServe from an exported layout, started as the image starts it (entrypoint, own process group)."""
    layout = tmp_path / "layout"
    export.export_k8s(layout, model_store, None, cpus=1)
    with RuntimeServer(layout, envelope="kservev2", container=True, drain_seconds=8) as ts:
        yield ts


def test_a_stop_signal_to_the_image_drains_then_stops_torchserve(container, digits):
    """SIGTERM to the process group (what tini -g hands on): readiness says 503 at once (within seconds on a loaded
    machine, where a readiness check already under way is slow), requests are still answered through the drain,
    and the stand-in for the endpoint controller, which stops sending once readiness fails, sees no request
    dropped; TorchServe has stopped well within the grace period."""
    assert status(container.health_url) == 200
    sender = Sender(container.inference_url, digits[7].read_bytes())
    time.sleep(1)
    os.killpg(container.process.pid, signal.SIGTERM)
    signalled = time.monotonic()
    while status(container.health_url) != 503:
        assert time.monotonic() - signalled < 5
        time.sleep(0.05)
    time.sleep(1)  # the endpoint controller's propagation, well within the drain
    results = sender.stop()
    assert container.process.poll() is None  # still draining
    assert container.process.wait(timeout=C.TERMINATION_GRACE_S) == 0
    assert time.monotonic() - signalled < C.TERMINATION_GRACE_S
    assert len(results) > 50 and set(results) == {7}


def test_a_second_stop_signal_skips_the_rest_of_the_drain(model_store, tmp_path):
    layout = tmp_path / "layout"
    export.export_k8s(layout, model_store, None, cpus=1)
    with RuntimeServer(layout, envelope="kservev2", container=True, drain_seconds=60) as ts:
        os.killpg(ts.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        os.killpg(ts.process.pid, signal.SIGTERM)
        assert ts.process.wait(timeout=30) == 0


def test_the_kserve_runtime_drains_on_sigterm_then_stops_cleanly(model_store, digits):
    with PrivateKServe(model_store / "mnist.mar", env={C.DRAIN_ENV: "3"}) as ks:
        sender = Sender(ks.inference_url, digits[3].read_bytes(), threads=4)
        time.sleep(0.5)
        os.kill(ks.server.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert status(f"{ks.inference_url}/v2/health/ready") == 503 and status(f"{ks.inference_url}/ping") == 503
        assert client.predict(digits[3].read_bytes(), url=ks.inference_url, retries=0)["digit"] == 3
        results = sender.stop()
        assert ks.server.wait(timeout=C.TERMINATION_GRACE_S) == 0
    assert len(results) > 20 and set(results) == {3}


def test_stop_drain_makes_the_kserve_runtime_unready_then_stops_it(model_store, tmp_path, digits):
    http, grpc_port = free_port(), free_port()
    env = {"TMPDIR": str(tmp_path), C.HOME_ENV: str(tmp_path)}
    args = ["serve", "--runtime", "kserve", "--archive", str(model_store / "mnist.mar"), "--workers", "1"]
    started = CliRunner().invoke(cli, [*args, "--http-port", str(http), "--grpc-port", str(grpc_port)], env=env)
    assert started.exit_code == 0, started.output
    url = f"http://127.0.0.1:{http}"
    seen = {}

    def watch():
        time.sleep(1)
        seen["ready"] = status(f"{url}/v2/health/ready")
        seen["digit"] = client.predict(digits[5].read_bytes(), url=url, retries=0)["digit"]

    watcher = threading.Thread(target=watch)
    watcher.start()
    stopped = CliRunner().invoke(cli, ["stop", "--drain", "2"], env=env)
    watcher.join()
    assert stopped.exit_code == 0 and "Draining for 2 s" in stopped.output
    assert "The kserve runtime (pid" in stopped.output
    assert seen == {"ready": 503, "digit": 5}
    assert status(f"{url}/ping") is None  # gone


@pytest.fixture
def big_seven(digits) -> bytes:
    """A 4800×4800 PNG of a 7: about 0.1 s of preprocessing, so that a batch of them keeps the worker busy."""
    image = Image.open(digits[7]).convert("L").resize((4800, 4800), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_client_retries_requests_a_killed_worker_never_answered(server, big_seven):
    """SIGKILL to the worker mid-batch: TorchServe answers the batch's requests 507 and starts a new worker; the
    kit's client sends them again, and each gets its answer."""
    retried = []
    with ThreadPoolExecutor(8) as pool:  # 32 requests of ~0.1 s of work each: seconds of work when the kill comes
        futures = [
            pool.submit(
                client.predict,
                big_seven,
                server.inference_url,
                retries=5,
                wait=60,
                on_retry=lambda attempt, error, delay: retried.append(error.status),
            )
            for _ in range(32)
        ]
        time.sleep(0.3)
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        answers = [f.result(timeout=120) for f in futures]
    assert [a["digit"] for a in answers] == [7] * 32
    assert retried and set(retried) <= set(client.RETRYABLE), retried


@pytest.mark.unit
def test_the_client_never_retries_bad_input(monkeypatch):
    calls = []

    def bad_request(*args, **kwargs):
        calls.append(1)
        raise client.ClientError("x", 400, "blank image: no digit found")

    monkeypatch.setattr(client, "post_image", bad_request)
    with pytest.raises(client.ClientError):
        client.predict(b"\x89PNG", retries=5, wait=10)
    assert len(calls) == 1


@pytest.mark.unit
def test_the_client_backs_off_with_jitter_up_to_its_retries(monkeypatch):
    delays = []
    monkeypatch.setattr(client, "post_image", lambda *a, **k: (_ for _ in ()).throw(client.ClientError("x", 503)))
    monkeypatch.setattr(client.time, "sleep", lambda seconds: None)
    with pytest.raises(client.ClientError):
        client.predict(b"\x89PNG", retries=4, on_retry=lambda attempt, error, delay: delays.append(delay))
    assert len(delays) == 4
    for delay, ceiling in zip(delays, (0.1, 0.2, 0.4, 0.8)):
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.unit
def test_predict_verbose_says_each_retry(monkeypatch, digits):
    outcomes = iter([client.ClientError("worker died", 507, "worker died"), {"digit": 7, "confidence": 1.0}])

    def flaky(*args, **kwargs):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(client, "post_image", flaky)
    monkeypatch.setattr(client.time, "sleep", lambda seconds: None)
    result = CliRunner().invoke(cli, ["predict", "--verbose", str(digits[7])])
    assert result.exit_code == 0
    assert f"{digits[7]}: retry 1 in " in result.output and "after: worker died" in result.output


@pytest.mark.unit
def test_the_shipped_haproxy_config_is_what_the_kit_writes_and_haproxy_accepts_it(tmp_path):
    shipped = ROOT / "examples" / "rollout" / "haproxy.cfg"
    replicas = {"r1": (8080, 8083), "r2": (8090, 8093), "r3": (8100, 8103)}
    assert shipped.read_text() == proxy.config(replicas, port=8088, admin_socket="/tmp/mnist-kit-haproxy.sock")
    checked = subprocess.run(["haproxy", "-c", "-f", str(shipped)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.fixture(scope="module")
def version_two(tiny_checkpoint, tmp_path_factory) -> str:
    """The same tiny model packed as version 2.0: a new archive to roll out."""
    store = tmp_path_factory.mktemp("version_two")
    return str(archive.build(tiny_checkpoint, store, version="2.0", max_accuracy_drop=TINY_INT8_DROP))


def test_a_rolling_update_through_haproxy_under_load_loses_no_request(model_store, version_two, digits):
    """Two replicas of 1.0 behind HAProxy, load at concurrency 8, each replaced in turn by a 2.0 replica: every
    request answered, and after the rollout only 2.0 answers."""
    report = rollout.scenario(
        "rollout",
        model_store / "mnist.mar",
        digits[7].read_bytes(),
        new_archive=version_two,
        replicas=2,
        concurrency=8,
        steady_s=3,
        after_s=3,
        drain_seconds=1,
    )
    assert report["total"]["failed"] == 0, report["total"]["errors"]
    assert report["total"]["sent"] > 500
    assert set(report["before"]["versions"]) == {"1.0"}
    assert set(report["during"]["versions"]) == {"1.0", "2.0"}
    assert set(report["after"]["versions"]) == {"2.0"}


@pytest.mark.unit
def test_the_deploying_docs_show_the_measured_scenarios_as_the_report_has_them():
    report = json.loads((ROOT / "docs" / "rollout" / "amd-epyc-avx512.json").read_text())
    docs = (ROOT / "docs" / "DEPLOYING.md").read_text()
    assert "<!-- rollout-table: docs/rollout/amd-epyc-avx512.json -->\n" + rollout.markdown(report) in docs
    assert all(scenario["total"]["failed"] == 0 for scenario in report["scenarios"])
