"""Running TorchServe: the kit's server configuration, start-up checks, and a private instance for the bench.

A private instance gets its own ports, working directory and temp dir (TorchServe keeps its PID file and worker
sockets there), so it never collides with a server started from the repo root, and it is always stopped.
"""

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.serving import client
from mnist_kit.serving.torchserve import config


def free_port() -> int:
    with socket.socket() as s:
        s.bind((C.HOST, 0))
        return s.getsockname()[1]


class ServerError(KitError):
    """TorchServe cannot start, did not start or did not become ready; the message says why."""


def preflight(config_path, tmp_dir=None, cwd=".", *, models: list[str] | None = None) -> dict:
    """Check what makes `torchserve --start` (in `cwd`) fail obscurely, and say it plainly. Returns the properties.
    `models`, archives to load instead of the config's load_models."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ServerError(f"{config_path} not found: pass --ts-config, or set {C.HOME_ENV} to the kit's folder")
    props = config.read(config_path)
    pid = live_pid(pid_file_path(tmp_dir))
    if pid:
        raise ServerError(f"TorchServe is already running (pid {pid}): stop it first with `mnist-kit stop`")
    store = Path(cwd, props.get("model_store", C.MODEL_STORE))
    archives = sorted(p.name for p in store.glob("*.mar")) if store.is_dir() else []
    listed = models if models is not None else props.get("load_models", "").split(",")
    wanted = [m.split("=")[-1] for m in listed if m and m != "ALL"]
    missing = [m for m in wanted if m not in archives]
    if not archives or missing:
        raise ServerError(
            f"{store}/ has no {', '.join(missing) or '.mar archives'}: "
            "train and archive first (mnist-kit train && mnist-kit archive)"
        )
    check_tls(props, config_path, cwd)
    for key in ("inference_address", "management_address", "metrics_address"):
        if key in props:
            host, port = props[key].rsplit("/", 1)[-1].rsplit(":", 1)
            check_port_free(host, int(port), key, config_path=config_path)
    return props


# The DER of the rsaEncryption algorithm identifier's OID (1.2.840.113549.1.1.1), inside a PKCS#8 RSA key.
RSA_OID = bytes.fromhex("06092a864886f70d010101")


def check_tls(props: dict, config_path, cwd=".") -> None:
    """HTTPS settings TorchServe would reject at start, or silently ignore, said plainly: both files, readable PEM,
    a key that matches the certificate, RSA and unencrypted (TorchServe reads no other), an https:// address."""
    cert, key = props.get("certificate_file"), props.get("private_key_file")
    https = props.get("inference_address", "").startswith("https://")
    if not cert and not key:
        if https:
            raise ServerError(
                f"inference_address is https:// in {config_path} but no certificate_file and private_key_file are "
                "set: TorchServe would make up a self-signed certificate that no client can verify"
            )
        return
    if not (cert and key):
        raise ServerError(f"{config_path} sets only one of certificate_file and private_key_file: set both")
    cert_path, key_path = Path(cwd, cert), Path(cwd, key)
    for name, path in (("certificate_file", cert_path), ("private_key_file", key_path)):
        if not path.is_file():
            raise ServerError(f"{name} {path} (in {config_path}) not found")
    if not is_unencrypted_rsa_key(key_path.read_text(errors="replace")):
        raise ServerError(
            f"private_key_file {key_path} is not an unencrypted RSA key in PEM, the only kind TorchServe reads "
            "(openssl genpkey -algorithm RSA -out tls.key)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except ssl.SSLError as e:
        raise ServerError(
            f"certificate_file {cert_path} and private_key_file {key_path} are not a PEM certificate and its own "
            f"key: {e.reason or e}"
        ) from None
    if not https:
        raise ServerError(
            f"{config_path} has a certificate but inference_address {props.get('inference_address')} is not "
            "https://: TorchServe would serve plain HTTP (e.g. inference_address=https://0.0.0.0:8443)"
        )


def is_unencrypted_rsa_key(pem: str) -> bool:
    """A PKCS#1 RSA key, or a PKCS#8 key whose algorithm is RSA (TorchServe's KeyFactory is RSA's)."""
    if "-----BEGIN RSA PRIVATE KEY-----" in pem:
        return "ENCRYPTED" not in pem
    body = pem.partition("-----BEGIN PRIVATE KEY-----")[2].partition("-----END PRIVATE KEY-----")[0]
    try:
        return bool(body) and RSA_OID in base64.b64decode("".join(body.split()))[:32]
    except ValueError:
        return False


def pid_file_path(tmp_dir=None, name: str = ".model_server.pid") -> Path:
    """Where a server started from here keeps its PID file, by default the torchserve launcher's: the temp dir it
    sees ($TMPDIR, else /tmp)."""
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


def wait_ready(management_url: str, timeout: float, log: Path, *, token=lambda: None, alive=lambda: True) -> None:
    """Until every registered model has a READY worker in every version; `token` returns the management key, read
    again on each try (a starting TorchServe writes a new one). A management API that refuses the key for
    C.TOKEN_GRACE_S is a token problem, said at once rather than after `timeout`."""
    deadline = time.monotonic() + timeout
    refused_since = None
    while time.monotonic() < deadline:
        if not alive():
            raise ServerError(f"TorchServe exited while starting: {last_error(log)} (whole log: {log})")
        try:
            models = json.loads(client.request(f"{management_url}/models", token=token(), timeout=10))["models"]
            if models and all(_ready(management_url, m["modelName"], token()) for m in models):
                return
            refused_since = None
        except client.ClientError as e:
            refused_since = (refused_since or time.monotonic()) if e.status == 401 else None
            if refused_since and time.monotonic() - refused_since > C.TOKEN_GRACE_S:
                raise ServerError(
                    f"TorchServe is up but its management API refuses the token ({e.detail or e}): the kit reads it "
                    f"from {C.KEY_FILE} in the folder TorchServe was started in, or ${C.TOKEN_ENV}; remove a stale "
                    "key file, or stop the server and start it again"
                ) from None
        except (ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise ServerError(f"TorchServe not ready after {timeout:.0f} s: {last_error(log)} (whole log: {log})")


def _ready(management_url: str, model: str, token: str | None) -> bool:
    described = json.loads(client.request(f"{management_url}/models/{model}/all", token=token, timeout=10))
    return all(any(w["status"] == "READY" for w in version["workers"]) for version in described)


def launch(config_path, output: Path, cwd=None, *, env=None, models: list[str] | None = None) -> None:
    """`torchserve --start --ts-config CONFIG --ncs [--models A.mar B.mar]`; its output goes to a file, since Java
    inherits it and would hold a pipe open forever. `models` load in their order: the first version of a model
    becomes its default."""
    launcher = [sys.executable, "-m", "ts.model_server", "--start", "--ts-config", str(config_path), "--ncs"]
    launcher += ["--models", *models] if models else []
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w") as out:
        result = subprocess.run(launcher, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ServerError(f"torchserve --start failed: {last_error(output)} (whole output: {output})")


def last_error(log: Path) -> str:
    """The log's last error line (else its last line): the one line a failure message has room for."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()] if log.is_file() else []
    errors = [line for line in lines if "ERROR" in line or "Error" in line or "Exception" in line]
    return (errors or [line for line in lines if line] or ["(no log)"])[-1]


class PrivateServer:
    """A TorchServe of its own: `with PrivateServer(model_store) as ts: ts.inference_url ...`; stopped on exit."""

    def __init__(
        self,
        model_store,
        load_models=f"{C.MODEL_NAME}.mar",
        production=False,
        *,
        workdir=None,
        env: dict | None = None,
        properties: dict | None = None,
        certificate=None,
        private_key=None,
    ):
        """`env` is added to the server's environment and `properties` to its config.properties; a certificate and
        private key (PEM) serve inference over HTTPS."""
        self.model_store = Path(model_store).resolve()
        self.load_models = load_models
        self.production = production
        self.properties, self.certificate, self.private_key = properties, certificate, private_key
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mnist-kit-ts-")).resolve()
        self.inference_port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.inference_url = f"{'https' if certificate else 'http'}://{C.HOST}:{self.inference_port}"
        self.management_url = f"http://{C.HOST}:{self.management_port}"
        self.metrics_url = f"http://{C.HOST}:{self.metrics_port}"
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.workdir / "logs"),
            "METRICS_LOCATION": str(self.workdir / "logs"),
            **(env or {}),
        }
        self.pid_file = tmp / ".model_server.pid"
        self.log = self.workdir / "logs" / "ts_log.log"

    @property
    def token(self) -> str | None:
        return client.read_token(self.workdir / C.KEY_FILE, "inference")

    @property
    def management_token(self) -> str | None:
        return client.read_token(self.workdir / C.KEY_FILE, "management")

    def start(self, timeout: float = 120) -> "PrivateServer":
        config_file = self.workdir / "config.properties"
        config_file.write_text(
            config.properties(
                "production" if self.production else "local",
                inference_port=self.inference_port,
                management_port=self.management_port,
                metrics_port=self.metrics_port,
                grpc_ports=(free_port(), free_port()),
                model_store=self.model_store,
                load_models=self.load_models,
                initial_worker_port=free_port(),
                certificate=self.certificate,
                private_key=self.private_key,
                extra=self.properties,
            )
        )
        launch(config_file, self.workdir / "torchserve.out", cwd=self.workdir, env=self.env)
        try:
            wait_ready(self.management_url, timeout, self.log, token=lambda: self.management_token, alive=self.running)
        except BaseException:
            self.stop()
            raise
        return self

    def pid(self) -> int | None:
        return live_pid(self.pid_file)

    def running(self) -> bool:
        return self.pid() is not None

    def worker_pids(self, model: str = C.MODEL_NAME) -> list[int]:
        url = f"{self.management_url}/models/{model}/all"
        described = json.loads(client.request(url, token=self.management_token, timeout=10))
        return sorted(w["pid"] for version in described for w in version["workers"])

    def memory_mib(self) -> float:
        """Memory of the whole server now, the Java frontend and every worker, in MiB: proportional set sizes
        (pages the workers share, such as torch's libraries, counted once, as a container's limit counts them),
        or resident sizes where the system does not report those."""
        return tree_memory_mib(self.pid())

    def stop(self, timeout: float = 30) -> None:
        """Stop the server and its workers; escalate to SIGKILL so nothing outlives the caller."""
        stop_pid(self.pid(), timeout)
        self.pid_file.unlink(missing_ok=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PrivateServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def tree_memory_mib(pid: int) -> float:
    """Memory of a process and all its descendants now, in MiB, each counted by memory_bytes."""
    root = psutil.Process(pid)
    return sum(memory_bytes(p) for p in [root, *root.children(recursive=True)]) / 2**20


def memory_bytes(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


def stop_server(key_file: Path, tmp_dir=None) -> int | None:
    """Stop the TorchServe whose PID file is in tmp_dir (TorchServe's own, as `torchserve --stop` finds it) and its
    workers, then remove the PID file and the token file: the stopped server's tokens are no use to anyone.
    Returns the PID stopped, or None when none was running."""
    pid_file = pid_file_path(tmp_dir)
    pid = live_pid(pid_file)
    if pid is None:
        return None
    stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    Path(key_file).unlink(missing_ok=True)
    return pid


def stop_pid(pid: int | None, timeout: float = 30) -> None:
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
