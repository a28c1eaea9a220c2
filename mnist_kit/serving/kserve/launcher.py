"""The `kserve` runtime's process from outside: start it in the background after the checks `serve` makes, wait
until it answers, stop it (draining), and a private one on free ports for the tests and the bench."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.packaging import mar
from mnist_kit.serving import client
from mnist_kit.serving.torchserve import launcher as torchserve_launcher
from mnist_kit.serving.torchserve.launcher import ServerError


def pid_file_path(tmp_dir=None) -> Path:
    """Beside TorchServe's own PID file."""
    return torchserve_launcher.pid_file_path(tmp_dir, ".mnist-kit-kserve.pid")


def command(
    archive,
    *,
    host: str = C.HOST,
    http_port: int = C.INFERENCE_PORT,
    grpc_port: int = C.KSERVE_GRPC_PORT,
    workers: int = 1,
    serving_form: str | None = None,
    key_file=None,
) -> list[str]:
    """The server's command line; with a key_file, token checking on (the production profile)."""
    line = [sys.executable, "-m", "mnist_kit.serving.kserve.server", "--archive", str(archive), "--host", host]
    line += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--workers", str(workers)]
    line += ["--serving-form", serving_form] if serving_form else []
    return line + (["--token-auth", "--key-file", str(key_file)] if key_file else [])


def preflight(archive, *, host: str, ports: dict[str, int], tmp_dir=None) -> None:
    """What makes the start fail obscurely, said plainly: no kserve installed, no archive, a server already running,
    a port taken."""
    if importlib.util.find_spec("kserve") is None:  # found, not imported: its gRPC protos clash with tritonclient's
        raise ServerError('the kserve runtime needs KServe\'s SDK: pip install -e ".[kserve]"')
    if not Path(archive).is_file():
        raise ServerError(f"{archive} not found: train and archive first (mnist-kit train && mnist-kit archive)")
    mar.read(archive)
    pid = torchserve_launcher.live_pid(pid_file_path(tmp_dir))
    if pid:
        raise ServerError(f"the kserve runtime is already running (pid {pid}): stop it first with `mnist-kit stop`")
    for name, port in ports.items():
        torchserve_launcher.check_port_free(host, port, f"--{name}", config_path="the command line")


def launch(argv: list[str], output: Path, *, tmp_dir=None, env=None) -> subprocess.Popen:
    """The server in the background, in a session of its own (it outlives `mnist-kit serve`), its output in a
    file, its PID where `mnist-kit stop` finds it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w") as out:
        server = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    pid_file_path(tmp_dir).write_text(str(server.pid))
    return server


def wait_ready(url: str, timeout: float, log: Path, *, alive=lambda: True) -> None:
    """Until /v2/health/ready answers 200: the model is loaded and a worker listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerError(
                f"the kserve runtime exited while starting: {torchserve_launcher.last_error(log)} (whole log: {log})"
            )
        try:
            client.request(f"{url}/v2/health/ready", timeout=5)
            return
        except client.ClientError:
            time.sleep(0.2)
    raise ServerError(
        f"the kserve runtime not ready after {timeout:.0f} s: {torchserve_launcher.last_error(log)} (log: {log})"
    )


def soft_stop(tmp_dir=None) -> int | None:
    """Tell the runtime started from this temp dir that it is going away (SIGUSR1): its readiness checks answer 503,
    so that proxies stop sending it requests, and it serves on until stopped. Its PID, or None when none runs."""
    pid = torchserve_launcher.live_pid(pid_file_path(tmp_dir))
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
    return pid


def stop(key_file=None, tmp_dir=None) -> int | None:
    """Stop the runtime started from this temp dir, letting it answer what it has received, and remove the key file
    its production profile wrote (a stopped server's key is no use to anyone); its PID, or None when none was
    running."""
    pid_file = pid_file_path(tmp_dir)
    pid = torchserve_launcher.live_pid(pid_file)
    if pid is not None:
        torchserve_launcher.stop_pid(pid, timeout=C.TERMINATION_GRACE_S)
        if key_file:
            Path(key_file).unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    return pid


class PrivateKServe:
    """A kserve runtime of its own on free ports: `with PrivateKServe(archive) as ks: ks.inference_url ...`."""

    def __init__(self, archive, *, workers: int = 1, serving_form: str | None = None, env: dict | None = None):
        self.archive, self.workers, self.serving_form = Path(archive), workers, serving_form
        self.http_port, self.grpc_port = torchserve_launcher.free_port(), torchserve_launcher.free_port()
        self.inference_url = f"http://{C.HOST}:{self.http_port}"
        self.grpc_address = f"{C.HOST}:{self.grpc_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="mnist-kit-ks-"))
        self.log = self.workdir / "kserve.out"
        self.env = {**os.environ, "TMPDIR": str(self.workdir), **(env or {})}
        self.server = None

    def start(self, timeout: float = 120) -> "PrivateKServe":
        argv = command(
            self.archive,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            workers=self.workers,
            serving_form=self.serving_form,
        )
        self.server = launch(argv, self.log, tmp_dir=self.workdir, env=self.env)
        try:
            wait_ready(self.inference_url, timeout, self.log, alive=lambda: self.server.poll() is None)
        except BaseException:
            self.stop()
            raise
        return self

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each process that answers requests (the workers, or the server that is its own one),
        in MiB: what each worker costs, torch or not."""
        server = psutil.Process(self.server.pid)
        return [round(p.memory_info().rss / 2**20, 1) for p in server.children() or [server]]

    def memory_mib(self) -> float:
        """Memory of the whole server now, counted as PrivateServer.memory_mib counts TorchServe's."""
        return torchserve_launcher.tree_memory_mib(self.server.pid)

    def count_in_log(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text) if self.log.is_file() else 0

    def stop(self) -> None:
        """Stop the server (draining) and remove its folder: nothing outlives the caller."""
        if self.server and self.server.poll() is None:
            torchserve_launcher.stop_pid(self.server.pid, timeout=C.KSERVE_GRACE_S + 10)
            self.server.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PrivateKServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
