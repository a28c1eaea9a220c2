"""Replicas of the kit on one machine, each as the serving image runs one: TorchServe under the image's entrypoint
(entrypoint.py: a stop drains, readiness on a port of its own), with its own ports, temp dirs (TMPDIR and TEMP) and
model store. What the rollout script and its tests put behind a proxy.

    with Replica(archive) as replica:
        replica.inference_url, replica.health_url    # a stop signal drains, then stops TorchServe
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.deploy import entrypoint
from mnist_kit.errors import KitError
from mnist_kit.packaging import mar
from mnist_kit.serving.torchserve import config
from mnist_kit.serving.torchserve import launcher as torchserve_launcher


def entrypoint_env(*, drain_seconds: float, health_port: int, inference_url: str, management_url: str) -> dict:
    """What the image's entrypoint reads, for a TorchServe of this machine: its drain, its readiness on loopback,
    and where to ask TorchServe."""
    return {
        C.DRAIN_ENV: str(drain_seconds),
        "MNIST_KIT_HEALTH_HOST": C.HOST,
        "MNIST_KIT_HEALTH_PORT": str(health_port),
        "MNIST_KIT_PING_URL": f"{inference_url}/ping",
        "MNIST_KIT_MANAGEMENT_URL": management_url,
    }


class Replica:
    def __init__(self, archive, *, drain_seconds: float = C.DRAIN_S, workers: int = 1):
        self.archive = mar.read(archive)
        self.version = self.archive.version
        self.drain_seconds, self.workers = drain_seconds, workers
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mnist-kit-replica-{self.version}-"))
        self.port, self.health_port = torchserve_launcher.free_port(), torchserve_launcher.free_port()
        self.inference_url = f"http://{C.HOST}:{self.port}"
        self.health_url = f"http://{C.HOST}:{self.health_port}/ping"
        self.log = self.workdir / "replica.out"
        self.server = None

    def start(self, timeout: float = 120) -> "Replica":
        """Start it and wait until its readiness says 200 (its model has a worker)."""
        store = self.workdir / "model-store"
        store.mkdir()
        shutil.copy(self.archive.path, store / f"{C.MODEL_NAME}.mar")
        tmp = self.workdir / "tmp"
        tmp.mkdir()
        config_file = self.workdir / "config.properties"
        management_port = torchserve_launcher.free_port()
        text = config.properties(
            "local",
            inference_port=self.port,
            management_port=management_port,
            metrics_port=torchserve_launcher.free_port(),
            grpc_ports=(torchserve_launcher.free_port(), torchserve_launcher.free_port()),
            model_store=store,
            initial_worker_port=torchserve_launcher.free_port(),
            extra={"default_workers_per_model": self.workers},
        )
        config_file.write_text(text)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.workdir / "logs"),
            "METRICS_LOCATION": str(self.workdir / "logs"),
            **entrypoint_env(
                drain_seconds=self.drain_seconds,
                health_port=self.health_port,
                inference_url=self.inference_url,
                management_url=f"http://{C.HOST}:{management_port}",
            ),
        }
        argv = [sys.executable, entrypoint.__file__, "torchserve", "--start", "--ncs", f"--ts-config={config_file}"]
        with open(self.log, "w") as out:
            # A process group of its own, as a container's: its stop signal goes to the group, as tini -g sends it.
            self.server = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise KitError(
                    f"replica {self.version} did not become ready: {torchserve_launcher.last_error(self.log)}"
                )
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """A signal to the replica's process group, as a container runtime stops a container under tini -g."""
        os.killpg(self.server.pid, signum)

    def stop(self, timeout: float = C.TERMINATION_GRACE_S) -> int:
        """Drain, then stop (what the kubelet's SIGTERM does); SIGKILL past the timeout. Its exit status."""
        if self.server.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.server.returncode

    def java_pid(self) -> int:
        return next(p.pid for p in self.processes() if p.name() == "java")

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes() if "model_service_worker" in " ".join(p.cmdline())]

    def processes(self) -> list[psutil.Process]:
        """Every process of this replica, orphans included (a worker whose Java was killed): those whose command
        line names its folder (TorchServe's config and the workers' sockets are in it)."""
        mine = []
        for p in psutil.process_iter(["cmdline"]):
            if str(self.workdir) in " ".join(p.info["cmdline"] or ()):
                mine.append(p)
        return mine

    def kill(self) -> None:
        """SIGKILL to everything of this replica: the entrypoint, Java, its workers."""
        for p in self.processes():
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.server:
            self.server.wait()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def stop_listening_on(port: int, timeout: float = C.TERMINATION_GRACE_S) -> int | None:
        """Stop the replica (of this machine, started by this module) whose TorchServe listens on `port`: SIGTERM
        to its entrypoint, which drains, then stops it; its folder removed. The entrypoint's PID, or None."""
        for connection in psutil.net_connections("tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                for ancestor in psutil.Process(connection.pid).parents():
                    if ancestor.cmdline()[1:2] == [entrypoint.__file__]:
                        folder = Path(ancestor.cwd())
                        ancestor.terminate()
                        ancestor.wait(timeout)
                        shutil.rmtree(folder, ignore_errors=True)
                        return ancestor.pid
        return None

    def __enter__(self) -> "Replica":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()
