"""Servers' processes from outside, for either runtime: what runs in the kit's own process (`mnist-kit serve` and
`stop`, the bench, the rollouts, the tests) and starts a server as a child, never inside a server.

`Launcher` is the one contract every launcher keeps (TorchServe's in serving/torchserve/launcher.py, the kserve
runtime's in serving/kserve/launcher.py, the rollout's replicas in deploy/replicas.py): `preflight()`, `launch()`,
`wait_ready(timeout)`, `stop()`, and `start()` (the three in turn) or `with launcher:`. Beside it, what they all use:
free ports, PID files, the port check, a log's last error, a process tree's memory, a start in the background, a
wait for readiness and a stop that leaves nothing behind.
"""

import abc
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.serving import client


class ServerError(KitError):
    """A server cannot start, did not start or did not become ready; the message says why."""


class Launcher(abc.ABC):
    """A server started from outside it: `with launcher: ...` starts it (checks, launch, readiness) and stops it."""

    name = "the server"  # how messages name it
    log: Path  # the file whose last error a failure message quotes

    @abc.abstractmethod
    def preflight(self) -> None:
        """What would make the start fail obscurely, said plainly (ServerError)."""

    @abc.abstractmethod
    def launch(self) -> None:
        """Start the server's processes; returns before the server answers."""

    @abc.abstractmethod
    def running(self) -> bool:
        """Whether the process this launcher watches is alive."""

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> None:
        """Until the server answers; an error when it exits first or `timeout` seconds pass."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server: nothing it started outlives the caller."""

    def stop_unready(self) -> None:
        """What start() does with a server that did not become ready: stop it, so that nothing is left running."""
        self.stop()

    def start(self, timeout: float = 120) -> "Launcher":
        """preflight(), launch(), wait_ready(timeout): the server answers when this returns."""
        self.preflight()
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:  # not ready in time, or interrupted
            self.stop_unready()
            raise
        return self

    def __enter__(self) -> "Launcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Spawned(Launcher):
    """A server this process spawns (`spawn`) and watches: alive while its process is, ready once `ready_url`
    answers 200. Subclasses set `argv`, `log` and `ready_url`, and launch it."""

    server: subprocess.Popen | None = None
    ready_url: str

    def running(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def wait_ready(self, timeout: float) -> None:
        await_ready(self.answers, timeout, alive=self.running, name=self.name, log=self.log)

    def answers(self) -> bool:
        try:
            client.request(self.ready_url, timeout=5)
            return True
        except client.ClientError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((C.HOST, 0))
        return s.getsockname()[1]


def pid_file_path(name: str, tmp_dir=None) -> Path:
    """The PID file `name` in the temp dir a server started from here sees ($TMPDIR, else /tmp), where TorchServe's
    launcher keeps its own."""
    return Path(tmp_dir or os.environ.get("TMPDIR") or tempfile.gettempdir()) / name


def live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        return pid if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def check_port_free(host: str, port: int, key: str, *, config_path) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise ServerError(
                f"port {port} ({key} in {config_path}) is taken by another program: "
                f"stop it (ss -ltnp | grep {port}) or change {key}"
            ) from None


def last_error(log: Path) -> str:
    """The log's last error line (else its last line): the one line a failure message has room for."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()] if log.is_file() else []
    errors = [line for line in lines if "ERROR" in line or "Error" in line or "Exception" in line]
    return (errors or [line for line in lines if line] or ["(no log)"])[-1]


def spawn(argv: list[str], output: Path, *, cwd=None, env=None) -> subprocess.Popen:
    """`argv` in the background, in a session (and process group) of its own, as a container's: it outlives the
    command that started it, and a stop signal can reach the whole group. Its output goes to a file: whatever it
    starts inherits the output and would hold a pipe open forever."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def poll(ready, timeout: float, *, alive=lambda: True) -> str | None:
    """Ask ready() every 0.2 s until it says True; None then, else what went wrong: the process exited first
    (alive() said False) or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return "exited while starting"
        if ready():
            return None
        time.sleep(0.2)
    return f"not ready after {timeout:.0f} s"


def await_ready(ready, timeout: float, *, alive=lambda: True, name: str, log: Path) -> None:
    """poll(), and a ServerError naming the server and its log's last error when it went wrong."""
    failure = poll(ready, timeout, alive=alive)
    if failure:
        raise ServerError(f"{name} {failure}: {last_error(log)} (whole log: {log})")


def tree_memory_mib(pid: int) -> float:
    """Memory of a process and all its descendants now, in MiB, each counted by memory_bytes."""
    root = psutil.Process(pid)
    return sum(memory_bytes(p) for p in [root, *root.children(recursive=True)]) / 2**20


def memory_bytes(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


def stop_pid(pid: int | None, timeout: float = 30) -> None:
    """SIGTERM to the process, then SIGKILL to it and its descendants that outstay `timeout`."""
    if pid is None:
        return
    try:
        process = psutil.Process(pid)
        children = process.children(recursive=True)
        process.terminate()
        _, alive = psutil.wait_procs([process, *children], timeout=timeout)
        for p in alive:
            p.kill()
    except psutil.Error:
        pass
