"""HAProxy in front of the kit's replicas, configured as an ingress or a service mesh fronts pods, and driven through
its runtime API (the admin socket) by the rollout: add a replica, take one out, wait until it has nothing in flight.

What the configuration does, and why:
- health checks: GET /ping on each replica's readiness port every second, out after 2 failures (a replica that is
  draining says 503 at once), back after 2 successes;
- keep-alive to the replicas (`http-reuse always`), leastconn balancing;
- retries of what a replica never answered: a connection refused or reset, a connection closed without an answer
  or in the middle of one, a 503 (queue full); up to 3 times, the later ones to another replica. A prediction is
  idempotent, so this is safe. A 507 (TorchServe's worker died mid-request) HAProxy cannot retry (`retry-on` knows
  no 507): the kit's client does.
- `X-Served-By`: the replica that answered, on every answer (server names carry the version).
"""

import csv
import io
import shutil
import socket
import subprocess
import time
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError

BACKEND = "replicas"
# Each replica's health checks, and idle keep-alive connections to it closed within a second of its last use: a
# replica taken out can be removed once its idle connections are gone.
CHECKS = "check port {health_port} inter 1s fastinter 500ms fall 2 rise 2 pool-purge-delay 1s"


class ProxyError(KitError):
    """HAProxy is missing, would not start, or refused a runtime command; the message says which."""


def config(replicas: dict[str, tuple[int, int]], *, port: int, admin_socket, host: str = C.HOST) -> str:
    """haproxy.cfg for `replicas` ({name: (inference port, readiness port)}, all on this machine) behind
    host:port, with the runtime API on admin_socket."""
    lines = [
        "# HAProxy in front of mnist-kit replicas, written by mnist_kit.deploy.proxy.config().",
        "global",
        "    maxconn 4096",
        f"    stats socket {admin_socket} mode 600 level admin",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 60s",
        "    # Predictions are idempotent: what a replica never answered goes to another one.",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response junk-response 503",
        "",
        "frontend mnist",
        f"    bind {host}:{port}",
        "    default_backend replicas",
        "",
        f"backend {BACKEND}",
        "    balance leastconn",
        "    http-reuse always",
        "    option httpchk GET /ping",
        "    http-check expect status 200",
        '    http-response set-header X-Served-By "%s"',
    ]
    for name, (inference_port, health_port) in replicas.items():
        lines.append(f"    server {name} {C.HOST}:{inference_port} {CHECKS.format(health_port=health_port)}")
    return "\n".join(lines) + "\n"


class Proxy:
    """A running HAProxy (`with Proxy(folder, port, replicas) as proxy: ...`) and its runtime API."""

    def __init__(self, folder, port: int, replicas: dict[str, tuple[int, int]]):
        if shutil.which("haproxy") is None:
            raise ProxyError("haproxy not found (Debian: apt-get install haproxy; scripts/setup.sh does, as root)")
        self.folder = Path(folder)
        self.port, self.url = port, f"http://{C.HOST}:{port}"
        self.admin_socket = self.folder / "haproxy.sock"
        self.config_file = self.folder / "haproxy.cfg"
        self.backend = BACKEND
        self.config_file.write_text(config(replicas, port=port, admin_socket=self.admin_socket))
        self.server = None

    @classmethod
    def attach(cls, admin_socket, backend: str = BACKEND) -> "Proxy":
        """A running HAProxy's runtime API, by its admin socket (`stats socket ... level admin`), for the replicas
        of `backend`."""
        proxy = cls.__new__(cls)
        proxy.admin_socket, proxy.server, proxy.backend = Path(admin_socket), None, backend
        if not proxy.admin_socket.exists() or not proxy._answers():
            raise ProxyError(f"no HAProxy answers on {admin_socket}")
        return proxy

    def pid(self) -> int:
        info = dict(line.split(": ", 1) for line in self.command("show info").splitlines() if ": " in line)
        return int(info["Pid"])

    def start(self, timeout: float = 10) -> "Proxy":
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config_file)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ProxyError(f"haproxy rejects {self.config_file}: {check.stderr.strip() or check.stdout.strip()}")
        log = open(self.folder / "haproxy.out", "w")
        # A session of its own: it outlives the command that started it (scripts/rollout.py up).
        self.server = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config_file)], stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self.admin_socket.exists() or not self._answers():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise ProxyError(f"haproxy did not start: see {self.folder / 'haproxy.out'}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            self.command("show info")
            return True
        except OSError:
            return False

    def command(self, line: str) -> str:
        """One runtime API command; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict]:
        """Each replica's row of `show stat`: status (UP, DOWN, MAINT, DRAIN...), scur (requests in flight)..."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == self.backend and r["svname"] != "BACKEND"}

    def add(self, name: str, inference_port: int, health_port: int) -> None:
        """A new replica, in rotation once its health checks pass."""
        checks = CHECKS.format(health_port=health_port)
        self._checked(f"add server {self.backend}/{name} {C.HOST}:{inference_port} {checks}")
        self._checked(f"enable health {self.backend}/{name}")
        self._checked(f"enable server {self.backend}/{name}")

    def drain(self, name: str) -> None:
        """No new requests to it; those in flight finish."""
        self._checked(f"set server {self.backend}/{name} state drain")

    def remove(self, name: str, timeout: float = 30) -> None:
        """Out of the backend, once HAProxy has closed its idle connections to it."""
        self._checked(f"set server {self.backend}/{name} state maint")
        deadline = time.monotonic() + timeout
        while "still has connections" in (answer := self.command(f"del server {self.backend}/{name}")):
            if time.monotonic() > deadline:
                raise ProxyError(f"haproxy would not remove {name}: {answer.strip()}")
            time.sleep(0.2)
        if not answer.strip().startswith("Server deleted"):
            raise ProxyError(f"haproxy refused `del server {BACKEND}/{name}`: {answer.strip()}")

    def wait_status(self, name: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (self.servers().get(name) or {}).get("status") != status:
            if time.monotonic() > deadline:
                raise ProxyError(f"{name} not {status} after {timeout:g} s: {self.servers().get(name)}")
            time.sleep(0.1)

    def wait_idle(self, name: str, timeout: float = 30) -> None:
        """Until the replica has no request in flight."""
        deadline = time.monotonic() + timeout
        while int(self.servers()[name]["scur"] or 0) > 0:
            if time.monotonic() > deadline:
                raise ProxyError(f"{name} still has requests in flight after {timeout:g} s")
            time.sleep(0.05)

    def _checked(self, line: str) -> None:
        answer = self.command(line).strip()
        if answer and not answer.startswith(("New server registered", "Server deleted")):
            raise ProxyError(f"haproxy refused `{line}`: {answer}")

    def stop(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=10)

    def __enter__(self) -> "Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
