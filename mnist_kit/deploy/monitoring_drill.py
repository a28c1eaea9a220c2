"""A monitoring drill: a kserve runtime of its own under the kit's load generator, scraped by a real Prometheus that
evaluates the rules `mnist-kit export monitoring` writes (at a 1 s interval), alerting a real Alertmanager that
posts to a webhook this process runs. Traffic comes in phases (plain digits, a burst of non-digits, pictures of
another kind); the drill says when each alert reached the webhook, and evaluates the dashboard's queries.

    with Drill(archive) as drill:
        drill.phase("plain digits", plain, seconds=20)
        drill.phase("non-digits", letters, seconds=10)
        drill.arrived("MnistKitFlagSurge")

tests/test_alerting.py checks the alerts; scripts/monitoring_drill.py writes their times and the dashboard's panels
drawn from Prometheus (docs/monitoring/*.json, docs/monitoring.png).
"""

import json
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from mnist_kit import constants as C
from mnist_kit.bench.run import SHADOW_VERSION, shadow_archive
from mnist_kit.deploy import alerts, dashboard, monitoring
from mnist_kit.deploy.rollout import Load
from mnist_kit.deploy.watchers import PrivateAlertmanager, PrivatePrometheus
from mnist_kit.serving.kserve.launcher import PrivateKServe, Shadowing

INTERVAL = "1s"


class Webhook:
    """Alertmanager's webhook receiver, on a free port in a thread: each alert of each notification, with the time
    (time.monotonic()) it arrived and the time it began firing (Unix seconds, Prometheus's)."""

    def __init__(self):
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                now = time.monotonic()
                for alert in body.get("alerts", []):
                    began = datetime.fromisoformat(alert["startsAt"]).timestamp()  # Unix seconds: when it fired
                    received.append({"at": now, "began_at": began, "status": alert["status"], **alert["labels"]})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((C.HOST, 0), Handler)
        self.url = f"http://{C.HOST}:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> "Webhook":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def at_once(config: dict, webhook: str) -> dict:
    """The exported alertmanager.yml sending to `webhook` and notifying at once: a drill times the alerts, not
    Alertmanager's grouping waits (30 s, 5 min in production)."""
    config["receivers"][0]["webhook_configs"][0]["url"] = webhook
    config["route"].update(group_wait="0s", group_interval="1s", repeat_interval="1h")
    return config


class Drill:
    """The runtime serving `archive`, the webhook, Alertmanager and Prometheus, started in that order and stopped in
    reverse; `phases` records each phase's name and times (monotonic, as the webhook's)."""

    def __init__(self, archive, *, workers: int = 2, concurrency: int = 4, pad=None):
        """`pad`, given the runtime's URL, a context manager yielding a pad's host:port for Prometheus to scrape
        (`mnist-kit ui`'s server, which lives above this module)."""
        self.archive, self.workers, self.concurrency, self.pad = archive, workers, concurrency, pad
        self.phases: list[dict] = []

    def __enter__(self) -> "Drill":
        with ExitStack() as stack:
            self.folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mnist-kit-drill-")))
            # A second version shadowing the default (the same weights, re-packed): the shadow's panel has figures.
            shadow = shadow_archive(Path(self.archive), self.folder / "shadow")
            versions, shadowing = [self.archive, shadow], Shadowing(SHADOW_VERSION)
            self.runtime = stack.enter_context(PrivateKServe(versions, workers=self.workers, shadow=shadowing))
            self.webhook = stack.enter_context(Webhook())
            pad = stack.enter_context(self.pad(self.runtime.inference_url)) if self.pad else None
            runtime = self.runtime.inference_url.removeprefix("http://")
            exported, am_config = self.folder / "monitoring", self.folder / "alertmanager.yml"
            self.alertmanager = PrivateAlertmanager(am_config)  # its port, for prometheus.yml; its config next
            am_address = f"{C.HOST}:{self.alertmanager.port}"
            monitoring.export_monitoring(exported, INTERVAL, (runtime,), pad=pad, alertmanager=am_address)
            config = yaml.safe_load((exported / "alertmanager/alertmanager.yml").read_text())
            am_config.write_text(yaml.safe_dump(at_once(config, self.webhook.url)))
            stack.enter_context(self.alertmanager)
            self.prometheus = stack.enter_context(PrivatePrometheus(exported / "prometheus/prometheus.yml"))
            self.wait(self.prometheus.targets_up, 30, "Prometheus's first scrape of the runtime and the pad")
            self.stack = stack.pop_all()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    @staticmethod
    def wait(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.2)

    def phase(self, name: str, pictures: list[bytes], *, seconds: float) -> dict:
        """`pictures` sent in turn for `seconds` by the load generator (no retries); the phase's figures."""
        load = Load(self.runtime.inference_url, pictures, concurrency=self.concurrency, retries=0)
        began, began_at = time.monotonic(), time.time()
        load.start()
        time.sleep(seconds)
        results = load.stop()
        phase = {"name": name, "began": began, "ended": time.monotonic(), "sent": len(results)}
        phase.update(began_at=began_at, ended_at=time.time())  # Unix seconds, as Prometheus's
        phase["failed"] = sum(not r.ok for r in results)
        self.phases.append(phase)
        return phase

    def arrived(self, alertname: str, *, after: float | None = None) -> float | None:
        """Seconds from `after` (the last phase's start) to the first firing notification at the webhook of an
        `alertname` alert that began firing since then (a notification repeating one that fired before, as a group
        whose other alerts resolve sends, is not a new alarm); None if none came."""
        phase = self.phases[-1]
        after = phase["began"] if after is None else after
        began_at = phase["began_at"] + (after - phase["began"])  # the same moment, in Unix seconds
        times = [
            a["at"]
            for a in self.webhook.received
            if a["alertname"] == alertname and a["status"] == "firing" and a["began_at"] >= began_at
        ]
        times = [t for t in times if t >= after]
        return round(min(times) - after, 2) if times else None

    def await_alert(self, alertname: str, timeout: float, *, after: float | None = None) -> float | None:
        """Wait up to `timeout` seconds for `alertname` to reach the webhook; its arrival time as `arrived` says."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.arrived(alertname, after=after)
            if found is not None:
                return found
            time.sleep(0.1)
        return None

    def firing(self) -> list[str]:
        """The alerts Prometheus holds firing now."""
        return sorted({a["labels"]["alertname"] for a in self.prometheus.alerts() if a["state"] == "firing"})

    def panels(self) -> dict[str, int]:
        """Each dashboard query (at the drill's interval) → how many series Prometheus returns for it now."""
        found = {}
        for title, query in dashboard.queries(alerts.seconds(INTERVAL)):
            found[f"{title}: {query}"] = len(self.prometheus.query(query))
        return found
