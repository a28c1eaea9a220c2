"""Prometheus and Alertmanager of their own, on free ports in a temporary folder, always stopped: what the monitoring
tests and `scripts/monitoring_drill.py` run against the files `mnist-kit export monitoring` writes (Debian's
`prometheus` and `prometheus-alertmanager`, which scripts/setup.sh installs).

    with PrivateAlertmanager(webhook_url) as am, PrivatePrometheus(config_file) as prom:
        prom.query('sum(rate(mnist_kit_requests_total[1m]))')
"""

import json
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.serving import client, processes
from mnist_kit.serving.processes import ServerError


def binary(*names: str) -> str:
    """The first of `names` on the PATH, or a ServerError saying how to install it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ServerError(f"{names[0]} not found: scripts/setup.sh installs it (as root: apt-get install {names[0]})")


class Watcher(processes.Spawned):
    """A server of Prometheus's family: its own folder and port, ready once /-/ready answers 200."""

    def __init__(self, argv: list[str], workdir: Path, port: int):
        self.argv, self.workdir, self.port = argv, workdir, port
        self.url = f"http://{C.HOST}:{port}"
        self.ready_url = f"{self.url}/-/ready"
        self.log = workdir / "out.log"

    def preflight(self) -> None:
        """Nothing to check: the binary was found, the port is a free one, the folder its own."""

    def launch(self) -> None:
        self.server = processes.spawn(self.argv, self.log, cwd=self.workdir)

    def get(self, path: str, **query) -> dict:
        """One read of its HTTP API: the `data` of its JSON answer."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return json.loads(client.request(url, timeout=30))["data"]

    def stop(self) -> None:
        if self.running():
            processes.stop_pid(self.server.pid, timeout=10)
            self.server.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


class PrivatePrometheus(Watcher):
    """Prometheus with `config_file` (its scrape targets, rule files and Alertmanager), storing in its own folder."""

    name = "Prometheus"

    def __init__(self, config_file):
        workdir, port = Path(tempfile.mkdtemp(prefix="mnist-kit-prometheus-")), processes.free_port()
        argv = [binary("prometheus"), f"--config.file={Path(config_file).resolve()}"]
        argv += [f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={C.HOST}:{port}"]
        super().__init__(argv, workdir, port)

    def query(self, expr: str) -> list[dict]:
        """An instant query's series ([{"metric": {...}, "value": [time, "value"]}, ...])."""
        return self.get("/api/v1/query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, *, step: float = 1) -> list[dict]:
        """A range query's series ([{"metric": {...}, "values": [[time, "value"], ...]}, ...]), times in Unix
        seconds."""
        return self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        """The alerts its rules hold now, pending or firing."""
        return self.get("/api/v1/alerts")["alerts"]

    def targets_up(self) -> bool:
        """Whether every target it scrapes was up at its last scrape."""
        active = self.get("/api/v1/targets")["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)


class PrivateAlertmanager(Watcher):
    """Alertmanager with `config_file` (its routes and receivers), clustering off, storing in its own folder."""

    name = "Alertmanager"

    def __init__(self, config_file):
        workdir, port = Path(tempfile.mkdtemp(prefix="mnist-kit-alertmanager-")), processes.free_port()
        argv = [binary("prometheus-alertmanager", "alertmanager"), f"--config.file={Path(config_file).resolve()}"]
        argv += [f"--storage.path={workdir / 'data'}", f"--web.listen-address={C.HOST}:{port}"]
        super().__init__(argv + ["--cluster.listen-address="], workdir, port)
