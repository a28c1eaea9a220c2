"""Running TorchServe: the kit's server configuration, and a TorchServe instance of its own for tests and benchmarks.

An instance gets its own ports, working directory and temp dir (TorchServe keeps its PID file and worker
sockets there), so it never collides with a server started from the repo root, and it is always stopped.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

import mnist_constants as C


def server_config(inference_port=C.INFERENCE_PORT, management_port=C.MANAGEMENT_PORT, metrics_port=C.METRICS_PORT,
                  grpc_ports=C.GRPC_PORTS, model_store=C.MODEL_STORE, load_models=f"{C.MODEL_NAME}.mar",
                  token_auth=False, initial_worker_port=None, host=C.HOST) -> str:
    """The text of a config.properties; with the defaults, the one at the repo root."""
    lines = [
        "# TorchServe configuration of mnist-kit, written by mnist_server.server_config().",
        "# Start from the repo root: torchserve --start --ts-config config.properties --ncs",
        f"inference_address=http://{host}:{inference_port}",
        f"management_address=http://{host}:{management_port}",
        f"metrics_address=http://{host}:{metrics_port}",
        # gRPC listens too (on loopback); a second instance on this machine needs its own ports.
        f"grpc_inference_port={grpc_ports[0]}",
        f"grpc_management_port={grpc_ports[1]}",
        f"model_store={model_store}",
        f"load_models={load_models}",
        "# Loopback only, so inference answers without a token; set this to false (the production profile)",
        "# and clients send the token TorchServe writes to key_file.json.",
        f"disable_token_authorization={'false' if token_auth else 'true'}",
        "enable_model_api=false",
        "metrics_mode=prometheus",
    ]
    if initial_worker_port:
        lines.append(f"initial_worker_port={initial_worker_port}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((C.HOST, 0))
        return s.getsockname()[1]


class ServerError(Exception):
    """TorchServe did not start or did not become ready; the message carries the end of its log."""


class TorchServe:
    """A private TorchServe: `with TorchServe(model_store) as ts: ts.inference_url ...`."""

    def __init__(self, model_store, load_models=f"{C.MODEL_NAME}.mar", token_auth=False, workdir=None,
                 env: dict | None = None):
        self.model_store = Path(model_store).resolve()
        self.load_models = load_models
        self.token_auth = token_auth
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mnist-kit-ts-")).resolve()
        self.inference_port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.inference_url = f"http://{C.HOST}:{self.inference_port}"
        self.management_url = f"http://{C.HOST}:{self.management_port}"
        self.metrics_url = f"http://{C.HOST}:{self.metrics_port}"
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(self.workdir / "logs"),
                    "METRICS_LOCATION": str(self.workdir / "logs"), **(env or {})}
        self.pid_file = tmp / ".model_server.pid"

    @property
    def token(self) -> str | None:
        key_file = self.workdir / C.KEY_FILE
        return json.loads(key_file.read_text())["inference"]["key"] if key_file.is_file() else None

    @property
    def management_token(self) -> str | None:
        key_file = self.workdir / C.KEY_FILE
        return json.loads(key_file.read_text())["management"]["key"] if key_file.is_file() else None

    def start(self, timeout: float = 120) -> "TorchServe":
        config = self.workdir / "config.properties"
        config.write_text(server_config(
            self.inference_port, self.management_port, self.metrics_port, (free_port(), free_port()),
            self.model_store, self.load_models, self.token_auth, initial_worker_port=free_port(),
        ))
        launcher = [sys.executable, "-m", "ts.model_server", "--start", "--ts-config", str(config), "--ncs"]
        # The launcher's output goes to a file: Java inherits it and would hold a pipe open forever.
        output = self.workdir / "torchserve.out"
        with open(output, "w") as out:
            result = subprocess.run(launcher, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise ServerError(f"torchserve --start failed: {output.read_text()}")
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until every model given in load_models has a READY worker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ServerError(f"TorchServe exited while starting:\n{self.log_tail()}")
            try:
                models = json.loads(self.get(f"{self.management_url}/models"))["models"]
                if self.load_models in ("", None) or (models and all(self._ready(m["modelName"]) for m in models)):
                    return
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise ServerError(f"TorchServe not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _ready(self, model: str) -> bool:
        described = json.loads(self.get(f"{self.management_url}/models/{model}"))
        return all(any(w["status"] == "READY" for w in version["workers"]) for version in described)

    def get(self, url: str) -> bytes:
        request = urllib.request.Request(url)
        token = self.management_token if url.startswith(self.management_url) else self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        try:
            return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def worker_pids(self, model: str = C.MODEL_NAME) -> list[int]:
        described = json.loads(self.get(f"{self.management_url}/models/{model}"))
        return sorted(w["pid"] for version in described for w in version["workers"])

    def count_in_log(self, text: str, log: str = "model_log.log") -> int:
        path = self.workdir / "logs" / log
        return path.read_text(errors="replace").count(text) if path.is_file() else 0

    def log_tail(self, lines: int = 40) -> str:
        log = self.workdir / "logs" / "ts_log.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else "(no log)"

    def stop(self, timeout: float = 30) -> None:
        """Stop the server and its workers; escalate to SIGKILL so nothing outlives the caller."""
        pid = self.pid()
        if pid is not None:
            try:
                process = psutil.Process(pid)
                children = process.children(recursive=True)
                process.terminate()
                _, alive = psutil.wait_procs([process, *children], timeout=timeout)
                for p in alive:
                    p.kill()
            except psutil.Error:
                pass
            self.pid_file.unlink(missing_ok=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "TorchServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
