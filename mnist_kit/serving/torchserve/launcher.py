"""TorchServe's launchers, run outside the server: the kit's process starts TorchServe (`torchserve --start`, which
leaves Java running in the background), checks its configuration first where it is the user's, and waits until every
model has a worker. Both keep processes.Launcher's contract:

- `HomeTorchServe`, what `mnist-kit serve` starts in the kit's home: it outlives the command; `stop_server` is
  `mnist-kit stop`;
- `PrivateServer`, one of its own for the bench and the tests: its own ports, working directory and temp dir
  (TorchServe keeps its PID file and worker sockets there), so it never collides with a server started from the
  kit's home, and it is always stopped.
"""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.serving import client, processes
from mnist_kit.serving.processes import ServerError
from mnist_kit.serving.torchserve import config


def pid_file(tmp_dir=None) -> Path:
    """Where TorchServe's launcher keeps its PID file: the temp dir the server sees."""
    return processes.pid_file_path(".model_server.pid", tmp_dir)


class TorchServeLauncher(processes.Launcher):
    """TorchServe started by its own launcher, `torchserve --start --ts-config CONFIG --ncs [--models A.mar ...]`,
    which returns once Java runs in the background, its PID file in the temp dir the server sees. Its key file (the
    tokens) is in the folder it starts in."""

    name = "TorchServe"
    management_url: str

    def __init__(self, config_file, cwd, *, output: Path, log: Path, env=None, models=None, tmp_dir=None):
        """`output` takes the launcher's own output, `log` is TorchServe's; `models` load in their order instead of
        the config's load_models: the first version of a model becomes its default."""
        self.config_file, self.cwd = Path(config_file), Path(cwd)
        self.output, self.log = output, log
        self.env, self.models = env, models
        self.pid_file = pid_file(tmp_dir)

    @property
    def management_token(self) -> str | None:
        return client.read_token(self.cwd / C.KEY_FILE, "management")

    def launch(self) -> None:
        """The launcher's output goes to a file, since Java inherits it and would hold a pipe open forever."""
        argv = [sys.executable, "-m", "ts.model_server", "--start", "--ts-config", str(self.config_file), "--ncs"]
        argv += ["--models", *self.models] if self.models else []
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output, "w") as out:
            result = subprocess.run(argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            last = processes.last_error(self.output)
            raise ServerError(f"torchserve --start failed: {last} (whole output: {self.output})")

    def wait_ready(self, timeout: float) -> None:
        wait_models_ready(
            self.management_url, timeout, self.log, token=lambda: self.management_token, alive=self.running
        )

    def pid(self) -> int | None:
        return processes.live_pid(self.pid_file)

    def running(self) -> bool:
        return self.pid() is not None


class HomeTorchServe(TorchServeLauncher):
    """The TorchServe `mnist-kit serve` starts: the user's config, in the kit's home (the model store, key file and
    logs/ there), in the background; it outlives the command, and `mnist-kit stop` stops it."""

    def __init__(self, config_file, home: Path, *, models: list[str] | None = None):
        """`models`, archives of the model store to load instead of the config's load_models."""
        logs = home / C.LOGS
        super().__init__(config_file, home, output=logs / "torchserve.out", log=logs / "ts_log.log", models=models)
        self.management_url = C.MANAGEMENT_URL
        self.properties: dict = {}

    def preflight(self) -> None:
        """Check what makes `torchserve --start` fail obscurely, and say it plainly; keep the config's properties."""
        if not self.config_file.is_file():
            raise ServerError(
                f"{self.config_file} not found: pass --ts-config, or set {C.HOME_ENV} to the kit's folder"
            )
        props = config.read(self.config_file)
        pid = self.pid()
        if pid:
            raise ServerError(f"TorchServe is already running (pid {pid}): stop it first with `mnist-kit stop`")
        store = Path(self.cwd, props.get("model_store", C.MODEL_STORE))
        archives = sorted(p.name for p in store.glob("*.mar")) if store.is_dir() else []
        listed = self.models if self.models is not None else props.get("load_models", "").split(",")
        wanted = [m.split("=")[-1] for m in listed if m and m != "ALL"]
        missing = [m for m in wanted if m not in archives]
        if not archives or missing:
            raise ServerError(
                f"{store}/ has no {', '.join(missing) or '.mar archives'}: "
                "train and archive first (mnist-kit train && mnist-kit archive)"
            )
        check_tls(props, self.config_file, self.cwd)
        for key in ("inference_address", "management_address", "metrics_address"):
            if key in props:
                host, port = props[key].rsplit("/", 1)[-1].rsplit(":", 1)
                processes.check_port_free(host, int(port), key, config_path=self.config_file)
        self.properties = props
        self.management_url = props.get("management_address", C.MANAGEMENT_URL)

    def stop_unready(self) -> None:
        """A TorchServe not ready in time is left running, as it may yet become ready: `mnist-kit stop` stops it."""

    def stop(self) -> None:
        stop_server(self.cwd / C.KEY_FILE)


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


def wait_models_ready(management_url: str, timeout: float, log: Path, *, token=lambda: None, alive=lambda: True):
    """Until every registered model has a READY worker in every version; `token` returns the management key, read
    again on each try (a starting TorchServe writes a new one). A management API that refuses the key for
    C.TOKEN_GRACE_S is a token problem, said at once rather than after `timeout`."""
    refused_since = None

    def ready() -> bool:
        nonlocal refused_since
        try:
            models = json.loads(client.request(f"{management_url}/models", token=token(), timeout=10))["models"]
            if models and all(_ready(management_url, m["modelName"], token()) for m in models):
                return True
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
        return False

    processes.await_ready(ready, timeout, alive=alive, name="TorchServe", log=log)


def _ready(management_url: str, model: str, token: str | None) -> bool:
    described = json.loads(client.request(f"{management_url}/models/{model}/all", token=token, timeout=10))
    return all(any(w["status"] == "READY" for w in version["workers"]) for version in described)


class PrivateServer(TorchServeLauncher):
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
        free_port = processes.free_port
        self.inference_port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.inference_url = f"{'https' if certificate else 'http'}://{C.HOST}:{self.inference_port}"
        self.management_url = f"http://{C.HOST}:{self.management_port}"
        self.metrics_url = f"http://{C.HOST}:{self.metrics_port}"
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(logs),
            "METRICS_LOCATION": str(logs),
            **(env or {}),
        }
        output = self.workdir / "torchserve.out"
        super().__init__(
            self.workdir / "config.properties",
            self.workdir,
            output=output,
            log=logs / "ts_log.log",
            env=env,
            tmp_dir=tmp,
        )

    @property
    def token(self) -> str | None:
        return client.read_token(self.workdir / C.KEY_FILE, "inference")

    def preflight(self) -> None:
        """Nothing to check: its ports are free ones, its folders its own."""

    def launch(self) -> None:
        self.write_config()
        super().launch()

    def write_config(self) -> None:
        """Its config.properties: the profile's, on its free ports, serving its model store."""
        free_port = processes.free_port
        self.config_file.write_text(
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

    def worker_pids(self, model: str = C.MODEL_NAME) -> list[int]:
        url = f"{self.management_url}/models/{model}/all"
        described = json.loads(client.request(url, token=self.management_token, timeout=10))
        return sorted(w["pid"] for version in described for w in version["workers"])

    def memory_mib(self) -> float:
        """Memory of the whole server now, the Java frontend and every worker, in MiB: proportional set sizes
        (pages the workers share, such as torch's libraries, counted once, as a container's limit counts them),
        or resident sizes where the system does not report those."""
        return processes.tree_memory_mib(self.pid())

    def stop(self, timeout: float = 30) -> None:
        """Stop the server and its workers; escalate to SIGKILL so nothing outlives the caller."""
        processes.stop_pid(self.pid(), timeout)
        self.pid_file.unlink(missing_ok=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def stop_server(key_file: Path, tmp_dir=None) -> int | None:
    """Stop the TorchServe whose PID file is in tmp_dir (TorchServe's own, as `torchserve --stop` finds it) and its
    workers, then remove the PID file and the token file: the stopped server's tokens are no use to anyone.
    Returns the PID stopped, or None when none was running."""
    path = pid_file(tmp_dir)
    pid = processes.live_pid(path)
    if pid is None:
        return None
    processes.stop_pid(pid)
    path.unlink(missing_ok=True)
    Path(key_file).unlink(missing_ok=True)
    return pid
