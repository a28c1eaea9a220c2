"""Replicas of the kit on one machine, each as the serving image runs one, started from outside: TorchServe under
the image's entrypoint (entrypoint.py, which runs inside the replica: a stop drains, readiness on a port of its own),
with its own ports, temp dirs (TMPDIR and TEMP) and model store. What the rollout script and its tests put behind a
proxy. A `LocalReplica` is a private TorchServe (serving/torchserve/launcher.py) launched another way, and keeps
serving/processes.py's Launcher contract.

    with LocalReplica(archive) as replica:
        replica.inference_url, replica.health_url    # a stop signal drains, then stops TorchServe
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.deploy import entrypoint
from mnist_kit.errors import KitError
from mnist_kit.packaging import mar
from mnist_kit.serving.processes import free_port, last_error, poll, spawn
from mnist_kit.serving.torchserve.launcher import PrivateServer


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


class LocalReplica(PrivateServer):
    """A replica on this machine: TorchServe in the foreground under the image's entrypoint, in a process group of
    its own, as a container's; ready when the entrypoint's readiness says 200 (its model has a worker)."""

    def __init__(self, archive, *, drain_seconds: float = C.DRAIN_S, workers: int = 1):
        self.archive = mar.read(archive)
        self.version = self.archive.version
        self.drain_seconds = drain_seconds
        workdir = Path(tempfile.mkdtemp(prefix=f"mnist-kit-replica-{self.version}-"))
        super().__init__(workdir / "model-store", workdir=workdir, properties={"default_workers_per_model": workers})
        self.health_port = free_port()
        self.health_url = f"http://{C.HOST}:{self.health_port}/ping"
        self.log = self.workdir / "replica.out"
        self.env |= {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **entrypoint_env(
                drain_seconds=drain_seconds,
                health_port=self.health_port,
                inference_url=self.inference_url,
                management_url=self.management_url,
            ),
        }
        self.server = None

    def launch(self) -> None:
        self.model_store.mkdir()
        shutil.copy(self.archive.path, self.model_store / f"{C.MODEL_NAME}.mar")
        self.write_config()
        argv = [
            sys.executable,
            entrypoint.__file__,
            "torchserve",
            "--start",
            "--ncs",
            f"--ts-config={self.config_file}",
        ]
        # A process group of its own, as a container's: its stop signal goes to the group, as tini -g sends it.
        self.server = spawn(argv, self.log, cwd=self.workdir, env=self.env)

    def running(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def wait_ready(self, timeout: float) -> None:
        if poll(self.ready, timeout, alive=self.running):
            raise KitError(f"replica {self.version} did not become ready: {last_error(self.log)}")

    def stop_unready(self) -> None:
        """Killed, its folder kept: the caller quotes its log."""
        self.kill()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """A signal to the replica's process group, as a container runtime stops a container under tini -g."""
        os.killpg(self.server.pid, signum)

    def drain_and_stop(self, timeout: float = C.TERMINATION_GRACE_S) -> int:
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

    def stop(self) -> None:
        """Killed, and its folder removed: nothing of it outlives the caller."""
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
