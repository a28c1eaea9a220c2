"""Rollouts and failures under load, on one machine: replicas (replicas.py) behind HAProxy (proxy.py), predictions
sent through it by the kit's client, and what each request got.

`replace` is Kubernetes' rolling update (maxSurge 1, maxUnavailable 0) done through the proxy's runtime API;
`scenario` runs it, or a failure, under load and reports sent / answered / failed, the versions that answered
and the latencies, before, during and after the change. `scripts/rollout.py` runs them at full size.
"""

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass

from mnist_kit import constants as C
from mnist_kit.deploy.proxy import Proxy
from mnist_kit.deploy.replicas import LocalReplica
from mnist_kit.percentiles import percentiles
from mnist_kit.serving import client
from mnist_kit.serving.processes import ServerError, free_port, last_error

WARM_UP_S = 2  # the first seconds of load (threads starting, connections opening) are no phase's figures
SCENARIOS = {
    "rollout": "each replica in turn replaced by one serving the new archive",
    "kill-server": "a replica's Java process killed (SIGKILL)",
    "kill-worker": "a replica's worker process killed (SIGKILL); TorchServe restarts it",
    "sigterm": "a replica told to stop (SIGTERM to its process group, as the kubelet does), under load",
}


def name_of(replica: LocalReplica, index: int) -> str:
    """The proxy's name of a replica: its version first, as X-Served-By reports it."""
    return f"{replica.version}-r{index + 1}"


def version_of(served_by: str | None) -> str | None:
    return served_by.rsplit("-r", 1)[0] if served_by else None


def replace(
    proxy: Proxy, current: dict[str, LocalReplica], start_new, *, log=lambda line: None
) -> dict[str, LocalReplica]:
    """Replace each replica in turn: start its successor (`start_new()`), wait until the proxy has it in rotation,
    then take the old one out (no new requests, wait until none is in flight, remove it) and stop it (its own
    drain, then TorchServe's stop) in the background. Never fewer replicas in rotation than before."""
    replaced, stopping = {}, []
    for index, (name, old) in enumerate(list(current.items())):
        new = start_new()
        new_name = name_of(new, index)
        proxy.add(new_name, new.inference_port, new.health_port)
        proxy.wait_status(new_name, "UP")
        log(f"{new_name} ready and in rotation")
        proxy.drain(name)
        proxy.wait_idle(name)
        proxy.remove(name)
        log(f"{name} out of rotation, nothing in flight: stopping it")
        stopping.append(threading.Thread(target=old.stop))
        stopping[-1].start()
        replaced[new_name] = new
    for thread in stopping:
        thread.join()
    return replaced


@dataclass
class Result:
    sent: float  # seconds since the load started
    ms: float
    ok: bool
    error: str | None
    served_by: str | None
    retries: int
    digit: int | None = None
    picture: int = 0  # which of the load's pictures was sent
    version: str | None = None  # the model version that answered (X-Model-Version)


class Load:
    """`concurrency` threads sending `body` to url's /predictions/mnist with the kit's client (`retries` retries each),
    until stopped or `total` are sent. `body` is one picture, or a list of them sent in turn (the n-th request
    sends picture n modulo their number), as traffic of many different images."""

    def __init__(
        self, url: str, body: bytes | list[bytes], *, concurrency: int = 32, total: int | None = None, retries: int = 3
    ):
        self.url, self.concurrency, self.total = url, concurrency, total
        self.pictures = [body] if isinstance(body, bytes) else list(body)
        self.retries = retries
        self.results: list[Result] = []
        self.stopped = threading.Event()
        self.count = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def start(self) -> "Load":
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def _next(self) -> int | None:
        """The index of the next picture to send, or None when the load is over."""
        with self.lock:
            if self.stopped.is_set() or (self.total is not None and self.count >= self.total):
                return None
            self.count += 1
            return (self.count - 1) % len(self.pictures)

    def _run(self) -> None:
        while (picture := self._next()) is not None:
            headers, retries = {}, []
            start = time.monotonic()
            try:
                answer = client.predict(
                    self.pictures[picture],
                    self.url,
                    retries=self.retries,
                    on_retry=lambda attempt, error, delay, said=retries: said.append(error),
                    response_headers=headers,
                )
                ok, error, digit = True, None, answer["digit"]
            except client.ClientError as e:
                ok, error, digit = False, str(e), None
            ms = (time.monotonic() - start) * 1000
            headers = {k.lower(): v for k, v in headers.items()}
            served_by, version = headers.get("x-served-by"), headers.get("x-model-version")
            self.results.append(
                Result(start - self.started, ms, ok, error, served_by, len(retries), digit, picture, version)
            )

    def stop(self) -> list[Result]:
        self.stopped.set()
        for thread in self.threads:
            thread.join()
        return self.results

    def now(self) -> float:
        return time.monotonic() - self.started


def summary(results: list[Result]) -> dict:
    answered = [r for r in results if r.ok]
    return {
        "sent": len(results),
        "answered": len(answered),
        "failed": len(results) - len(answered),
        "retried": sum(r.retries > 0 for r in results),
        "versions": dict(Counter(version_of(r.served_by) or "?" for r in answered)),
        **percentiles([r.ms for r in answered]),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def scenario(
    kind: str,
    archive,
    body: bytes,
    *,
    new_archive=None,
    replicas: int = 3,
    concurrency: int = 32,
    steady_s: float = 10,
    after_s: float = 10,
    drain_seconds: float = C.DRAIN_S,
    log=lambda line: None,
) -> dict:
    """Run one of SCENARIOS under load (`body` to /predictions/mnist, the rollout to new_archive) through a real
    HAProxy; the figures of each phase (before, during, after the
    change), what happened when, and the load's totals."""
    if kind not in SCENARIOS:
        raise ValueError(f"scenario {kind!r} is not one of {sorted(SCENARIOS)}")
    folder = tempfile.mkdtemp(prefix="mnist-kit-rollout-")
    spawned = start_all([lambda: LocalReplica(archive, drain_seconds=drain_seconds) for _ in range(replicas)])
    current = {name_of(r, i): r for i, r in enumerate(spawned)}
    events = {}
    try:
        backends = {name: (r.inference_port, r.health_port) for name, r in current.items()}
        with Proxy(folder, free_port(), backends) as proxy:
            for name in current:
                proxy.wait_status(name, "UP")
            load = Load(proxy.url, body, concurrency=concurrency).start()
            time.sleep(steady_s)
            events["change_started"] = load.now()
            current = change(
                kind,
                proxy,
                current,
                new_archive=new_archive,
                drain_seconds=drain_seconds,
                events=events,
                load=load,
                log=log,
                spawned=spawned,
            )
            events["change_ended"] = load.now()
            log(f"{kind}: change took {events['change_ended'] - events['change_started']:.1f} s")
            time.sleep(after_s)
            results = load.stop()
    finally:  # every replica the scenario started, those a failed rollout left half-way included
        for replica in spawned:
            replica.stop()
        shutil.rmtree(folder, ignore_errors=True)
    before = [r for r in results if WARM_UP_S <= r.sent < events["change_started"]]
    during = [r for r in results if events["change_started"] <= r.sent < events["change_ended"]]
    after = [r for r in results if r.sent >= events["change_ended"]]
    report = {
        "scenario": kind,
        "what": SCENARIOS[kind],
        "replicas": replicas,
        "concurrency": concurrency,
        "drain_seconds": drain_seconds,
        "events_s": {k: round(v, 2) for k, v in events.items()},
        "total": summary(results),
        "steady": summary(before + after),
        "before": summary(before),
        "during": summary(during),
        "after": summary(after),
    }
    log(json.dumps(report["total"]))
    return report


def start_all(makers) -> list[LocalReplica]:
    """Replicas started side by side (each waits for its own worker)."""
    replicas = [make() for make in makers]
    threads = [threading.Thread(target=r.start) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for replica in replicas:
        if not replica.ready():
            for r in replicas:
                r.stop()
            raise ServerError(f"a replica did not start: {last_error(replica.log)}")
    return replicas


def timed(log, load):
    return lambda line: log(f"{load.now():6.1f} s  {line}")


def change(kind, proxy, current, *, new_archive, drain_seconds, events, load, log, spawned) -> dict[str, LocalReplica]:
    """The change itself; returns the replicas serving after it. Each replica it starts joins `spawned`."""
    name, first = next(iter(current.items()))
    if kind == "rollout":

        def start_new() -> LocalReplica:
            spawned.append(LocalReplica(new_archive, drain_seconds=drain_seconds))
            return spawned[-1].start()

        replaced = replace(proxy, current, start_new, log=timed(log, load))
        events["rollout_ended"] = load.now()
        return replaced
    if kind == "kill-server":
        os.kill(first.java_pid(), signal.SIGKILL)
        proxy.wait_status(name, "DOWN")
        events["proxy_marked_down"] = load.now()
        time.sleep(2)
    elif kind == "kill-worker":
        (worker,) = first.worker_pids()[:1]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (first.ready() and set(first.worker_pids()) - {worker}) and time.monotonic() < deadline:
            time.sleep(0.1)
        proxy.wait_status(name, "UP")
        events["worker_back"] = load.now()
    elif kind == "sigterm":
        first.signal()
        proxy.wait_status(name, "DOWN", timeout=drain_seconds + 10)
        events["proxy_marked_down"] = load.now()
        code = first.server.wait(timeout=C.TERMINATION_GRACE_S)
        events["replica_exited"] = load.now()
        events["exit_code"] = code
    return current


def markdown(document: dict) -> str:
    """The table docs/DEPLOYING.md shows of a `scripts/rollout.py scenarios` report."""
    lines = [
        "| scenario | sent | answered | failed | retried by the client | p99 steady / during | versions after |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in document["scenarios"]:
        t, s, d = report["total"], report["steady"], report["during"]
        after = ", ".join(f"{v}: {n}" for v, n in sorted(report["after"]["versions"].items()))
        lines.append(
            f"| {report['scenario']} | {t['sent']} | {t['answered']} | {t['failed']} | {t['retried']} | "
            f"{s['p99_ms']:.0f} / {d['p99_ms']:.0f} ms | {after} |"
        )
    return "\n".join(lines) + "\n"
