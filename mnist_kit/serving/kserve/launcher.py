"""The `kserve` runtime's launchers, run outside the server: the kit's process starts the runtime
(`python -m mnist_kit.serving.kserve.server`) in the background and waits until it answers. Both keep
processes.Launcher's contract:

- `HomeKServe`, what `mnist-kit serve --runtime kserve` starts after the checks it makes: it outlives the command;
  `soft_stop` and `stop_server` are `mnist-kit stop` (draining);
- `PrivateKServe`, one of its own on free ports for the tests and the bench, always stopped.
"""

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.serving import processes
from mnist_kit.serving.kserve import versions
from mnist_kit.serving.processes import ServerError


def pid_file(tmp_dir=None) -> Path:
    """Where the kit keeps the runtime's PID file: beside TorchServe's own."""
    return processes.pid_file_path(".mnist-kit-kserve.pid", tmp_dir)


@dataclass(frozen=True)
class Shadowing:
    """A version that shadows the default (shadow.py): which, for what share of requests, its disagreements where."""

    version: str
    share: float = 1.0
    store: Path | None = None

    def arguments(self) -> list[str]:
        line = ["--shadow", self.version, "--shadow-share", repr(self.share)]
        return line + (["--shadow-store", str(self.store)] if self.store else [])


def command(
    archives,
    *,
    host: str = C.HOST,
    http_port: int = C.INFERENCE_PORT,
    grpc_port: int = C.KSERVE_GRPC_PORT,
    workers: int = 1,
    serving_form: str | None = None,
    key_file=None,
    shadow: Shadowing | None = None,
) -> list[str]:
    """The server's command line for `archives` (one model's versions, the default first); with a key_file, token
    checking on (the production profile)."""
    line = [sys.executable, "-m", "mnist_kit.serving.kserve.server"]
    for archive in archives:
        line += ["--archive", str(archive)]
    line += ["--host", host, "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--workers", str(workers)]
    line += ["--serving-form", serving_form] if serving_form else []
    line += shadow.arguments() if shadow else []
    return line + (["--token-auth", "--key-file", str(key_file)] if key_file else [])


class KServeLauncher(processes.Spawned):
    """The runtime started in the background (processes.spawn: a session of its own, its output in `log`), its PID
    where `mnist-kit stop` finds it; ready once /v2/health/ready answers 200 (the model is loaded and a worker
    listens)."""

    name = "the kserve runtime"

    def __init__(self, argv: list[str], inference_url: str, log: Path, *, env=None, tmp_dir=None):
        self.argv, self.inference_url, self.log = argv, inference_url, log
        self.env, self.tmp_dir = env, tmp_dir
        self.ready_url = f"{inference_url}/v2/health/ready"

    def launch(self) -> None:
        self.server = processes.spawn(self.argv, self.log, env=self.env)
        pid_file(self.tmp_dir).write_text(str(self.server.pid))


class HomeKServe(KServeLauncher):
    """The runtime `mnist-kit serve --runtime kserve` starts: it outlives the command, and `mnist-kit stop` stops
    it. Its output goes to logs/kserve.out in the kit's home."""

    def __init__(
        self,
        archives: list,
        home: Path,
        *,
        host: str,
        http_port: int,
        grpc_port: int,
        workers: int,
        key_file=None,
        shadow: Shadowing | None = None,
    ):
        """`archives`: one model's versions, the default first. With a key_file, every request needs the token (the
        production profile); with a shadow, that version reads the default's pictures (its store in the home)."""
        argv = command(
            archives,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            workers=workers,
            key_file=key_file,
            shadow=shadow,
        )
        super().__init__(argv, f"http://{C.HOST}:{http_port}", home / C.LOGS / "kserve.out")
        self.archives, self.host, self.shadow = [Path(a) for a in archives], host, shadow
        self.ports = {"http-port": http_port, "grpc-port": grpc_port}  # as the command line names them

    def preflight(self) -> None:
        """What makes the start fail obscurely, said plainly: no kserve installed, no archive, archives that are not
        one model's versions, a shadow that is not one of them, a server already running, a port taken."""
        if importlib.util.find_spec("kserve") is None:  # found, not imported: its gRPC protos clash with tritonclient's
            raise ServerError('the kserve runtime needs KServe\'s SDK: pip install -e ".[kserve]"')
        for archive in self.archives:
            if not archive.is_file():
                raise ServerError(
                    f"{archive} not found: train and archive first (mnist-kit train && mnist-kit archive)"
                )
        read = versions.read(self.archives)
        if self.shadow:
            versions.check_shadow(read, self.shadow.version, self.shadow.share)
        pid = processes.live_pid(pid_file(self.tmp_dir))
        if pid:
            raise ServerError(f"the kserve runtime is already running (pid {pid}): stop it first with `mnist-kit stop`")
        for name, port in self.ports.items():
            processes.check_port_free(self.host, port, f"--{name}", config_path="the command line")

    def stop(self) -> None:
        """Stop it (draining); the key file its production profile wrote stays, for `mnist-kit stop` to remove."""
        stop_server(tmp_dir=self.tmp_dir)


def soft_stop(tmp_dir=None) -> int | None:
    """Tell the runtime started from this temp dir that it is going away (SIGUSR1): its readiness checks answer 503,
    so that proxies stop sending it requests, and it serves on until stopped. Its PID, or None when none runs."""
    pid = processes.live_pid(pid_file(tmp_dir))
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
    return pid


def stop_server(key_file=None, tmp_dir=None) -> int | None:
    """Stop the runtime started from this temp dir, letting it answer what it has received, and remove the key file
    its production profile wrote (a stopped server's key is no use to anyone); its PID, or None when none was
    running."""
    path = pid_file(tmp_dir)
    pid = processes.live_pid(path)
    if pid is not None:
        processes.stop_pid(pid, timeout=C.TERMINATION_GRACE_S)
        if key_file:
            Path(key_file).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return pid


class PrivateKServe(KServeLauncher):
    """A kserve runtime of its own on free ports: `with PrivateKServe(archive) as ks: ks.inference_url ...`;
    `archive` is one .mar or a list of one model's versions (the default first); `shadow`, a version shadowing the
    default (its store in the server's own folder unless it names one: `shadow_store`)."""

    def __init__(
        self,
        archive,
        *,
        workers: int = 1,
        serving_form: str | None = None,
        env: dict | None = None,
        shadow: Shadowing | None = None,
    ):
        self.archives = [Path(a) for a in (archive if isinstance(archive, (list, tuple)) else [archive])]
        self.archive, self.workers, self.serving_form = self.archives[0], workers, serving_form
        self.http_port, self.grpc_port = processes.free_port(), processes.free_port()
        self.grpc_address = f"{C.HOST}:{self.grpc_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="mnist-kit-ks-"))
        if shadow and shadow.store is None:
            shadow = Shadowing(shadow.version, shadow.share, self.workdir / C.SHADOW_DB)
        self.shadow_store = shadow.store if shadow else None
        argv = command(
            self.archives,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            workers=workers,
            serving_form=serving_form,
            shadow=shadow,
        )
        env = {**os.environ, "TMPDIR": str(self.workdir), **(env or {})}
        url = f"http://{C.HOST}:{self.http_port}"
        super().__init__(argv, url, self.workdir / "kserve.out", env=env, tmp_dir=self.workdir)

    def preflight(self) -> None:
        """Nothing to check: its ports are free ones, its folder its own."""

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each process that answers requests (the workers, or the server that is its own one),
        in MiB: what each worker costs, torch or not."""
        server = psutil.Process(self.server.pid)
        return [round(p.memory_info().rss / 2**20, 1) for p in server.children() or [server]]

    def memory_mib(self) -> float:
        """Memory of the whole server now, counted as PrivateServer.memory_mib counts TorchServe's."""
        return processes.tree_memory_mib(self.server.pid)

    def count_in_log(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text) if self.log.is_file() else 0

    def stop(self) -> None:
        """Stop the server (draining) and remove its folder: nothing outlives the caller."""
        if self.running():
            processes.stop_pid(self.server.pid, timeout=C.KSERVE_GRACE_S + 10)
            self.server.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
