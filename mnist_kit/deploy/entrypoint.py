#!/usr/bin/env python3
"""The serving image's entrypoint (under `tini -g`), and the replica launcher's: TorchServe that loses nothing when
it is told to stop. Standard library only: the TorchServe image has Python but not the kit.

    mnist-kit-entrypoint torchserve --start --model-store=... --ts-config=...

KServe's TorchServe runtime passes `torchserve --start ...` without --foreground: it is added, so the container lives
exactly as long as TorchServe. TorchServe runs in a session of its own, so the stop signal `tini -g` hands the
process group reaches this script only, which then:

1. drains for $MNIST_KIT_DRAIN_SECONDS (default 10): TorchServe serves as usual while the readiness endpoint below
   answers 503, so that an endpoint controller or a proxy takes the replica out of rotation;
2. stops TorchServe (SIGTERM to its process group), which by then has nothing in flight, and ends with it.

A second signal skips what is left of the drain. TorchServe's own /ping cannot say that a replica is going away, so
this script answers readiness on $MNIST_KIT_HEALTH_PORT (default 8083): GET /ping is 200 {"status": "Healthy"}
while TorchServe's /ping ($MNIST_KIT_PING_URL) is and every model has a READY worker (its management API,
$MNIST_KIT_MANAGEMENT_URL: TorchServe's /ping says Healthy while workers still load; where that API wants a token,
/ping alone), 503 otherwise and while draining. Any other command runs as given.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRAIN_S = float(os.environ.get("MNIST_KIT_DRAIN_SECONDS") or 10)
HEALTH_HOST = os.environ.get("MNIST_KIT_HEALTH_HOST", "0.0.0.0")
HEALTH_PORT = int(os.environ.get("MNIST_KIT_HEALTH_PORT") or 8083)
PING_URL = os.environ.get("MNIST_KIT_PING_URL", "http://127.0.0.1:8080/ping")
MANAGEMENT_URL = os.environ.get("MNIST_KIT_MANAGEMENT_URL", "http://127.0.0.1:8081")
STOP_TIMEOUT_S = 30  # TorchServe's own stop takes a few seconds; past this, SIGKILL
KILLED_EXIT = 137  # what a container engine reports for a process it had to SIGKILL: the stop was not clean


def log(message: str) -> None:
    print(f"mnist-kit-entrypoint: {message}", file=sys.stderr, flush=True)


class Replica:
    def __init__(self, argv: list[str]):
        self.argv = argv
        self.draining = threading.Event()  # first stop signal
        self.now = threading.Event()  # second one

    def signalled(self, signum, frame) -> None:
        if self.draining.is_set():
            self.now.set()
        self.draining.set()

    def ready(self) -> tuple[int, dict]:
        if self.draining.is_set():
            return 503, {"status": "Draining"}
        try:
            get(PING_URL)
            try:
                models = get(f"{MANAGEMENT_URL}/models")["models"]
            except urllib.error.HTTPError as e:
                if e.code not in (401, 403):
                    raise
                return 200, {"status": "Healthy"}  # a management API behind a token: /ping is all there is to ask
            for model in models:
                workers = [w for v in get(f"{MANAGEMENT_URL}/models/{model['modelName']}/all") for w in v["workers"]]
                if not any(w["status"] == "READY" for w in workers):
                    return 503, {"status": "Starting", "model": model["modelName"]}
            return 200, {"status": "Healthy"}
        except urllib.error.HTTPError as e:
            return 503, {"status": "Unhealthy", "code": e.code}
        except (OSError, ValueError, LookupError, TypeError):
            return 503, {"status": "Starting"}

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.signalled)
        health = health_server(self)
        threading.Thread(target=health.serve_forever, daemon=True).start()
        server = subprocess.Popen(self.argv, start_new_session=True)
        while server.poll() is None and not self.draining.wait(0.2):
            pass
        if server.poll() is not None:
            log(f"TorchServe exited by itself ({server.returncode})")
            return server.returncode
        log(f"stop signal: draining for {DRAIN_S:g} s (readiness 503, serving as usual)")
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and server.poll() is None and not self.now.wait(0.1):
            pass
        log("stopping TorchServe")
        killed = stop_group(server)
        health.shutdown()
        if killed:
            log(f"TorchServe outstayed its {STOP_TIMEOUT_S} s to stop and was killed (SIGKILL): exit {KILLED_EXIT}")
            return KILLED_EXIT
        return 0


def get(url: str):
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read() or b"{}")


def stop_group(server: subprocess.Popen) -> bool:
    """SIGTERM to TorchServe's process group (the launcher, Java, the workers), then wait until the whole group is
    gone (Java outlives its launcher by a few seconds); SIGKILL to what outstays STOP_TIMEOUT_S. Whether it had to
    kill."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    killed = False
    try:
        os.killpg(server.pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            server.poll()
            os.killpg(server.pid, 0)  # ProcessLookupError once none is left
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
        killed = True
    except ProcessLookupError:
        pass
    server.wait()
    return killed


def health_server(replica: Replica) -> ThreadingHTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = replica.ready() if self.path in ("/ping", "/ready") else (404, {"status": "Not found"})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # a probe every few seconds is not worth a line
            pass

    server = ThreadingHTTPServer((HEALTH_HOST, HEALTH_PORT), Health)
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> int:
    if not argv:
        log("usage: mnist-kit-entrypoint COMMAND [ARGS...]")
        return 2
    if argv[0] != "torchserve":
        os.execvp(argv[0], argv)
    if "--foreground" not in argv:
        argv = [*argv, "--foreground"]
    return Replica(argv).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
