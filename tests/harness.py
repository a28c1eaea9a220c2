"""Test tooling shared by the test modules: a private TorchServe (authenticated GETs, counting lines in its logs),
one started from an exported layout as KServe's runtime and the image start it, the drawing pad's server in front of
it, a letter to show it, a stand-in for TorchServe's metrics cache, and a server that records what it is sent."""

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from mnist_kit import constants as C
from mnist_kit.deploy.replicas import entrypoint_env
from mnist_kit.packaging import mar
from mnist_kit.serving import client
from mnist_kit.serving.processes import free_port
from mnist_kit.serving.torchserve.launcher import PrivateServer
from mnist_kit.ui.pad_client import Reader
from mnist_kit.ui.server import PadServer
from mnist_kit.worker import serving_forms

ROOT = Path(__file__).resolve().parent.parent


class TorchServe(PrivateServer):
    """A private TorchServe (free ports, own temp dir, always stopped) with what tests ask of it."""

    def get(self, url: str) -> bytes:
        token = self.management_token if url.startswith(self.management_url) else self.token
        return client.request(url, token=token, timeout=10)

    def count_in_log(self, text: str, log: str = "model_log.log") -> int:
        path = self.workdir / "logs" / log
        return path.read_text(errors="replace").count(text) if path.is_file() else 0

    def served_form(self, archive, model: str = C.MODEL_NAME):
        """The form the workers chose (their describe answer), loaded in this process from `archive`: normalised
        NumPy images in, log-probabilities out."""
        form = client.described(self.management_url, model, self.management_token)[1]["serving_form"]
        with tempfile.TemporaryDirectory() as tmp:
            folder = mar.read(archive).extract(tmp)
            return serving_forms.load(str(folder), str(folder / mar.read(archive).serialized_file))[form]


class RuntimeServer(TorchServe):
    """TorchServe started from an exported layout with KServe's runtime's arguments and environment
    (TS_SERVICE_ENVELOPE included), on private addresses: the test's one change to the exported config, since
    tests share the machine. With `container=True` it is started as the image starts it: through the image's
    entrypoint (mnist_kit/deploy/entrypoint.py, a drain of `drain_seconds`), in a process group of its own (what
    tini -g signals), its readiness on `health_url`."""

    def __init__(self, layout: Path, envelope: str, container: bool = False, drain_seconds: float = 1):
        super().__init__(layout / "model-store", env={"TS_SERVICE_ENVELOPE": envelope})
        self.layout = layout
        self.container, self.drain_seconds = container, drain_seconds
        self.health_port = free_port()
        self.health_url = f"http://{C.HOST}:{self.health_port}/ping"
        self.process = None

    def launch(self) -> None:
        config = self.layout / "config" / "config.properties"
        private = {
            "inference_address": self.inference_url,
            "management_address": self.management_url,
            "metrics_address": self.metrics_url,
            "grpc_inference_port": str(free_port()),
            "grpc_management_port": str(free_port()),
        }
        text = config.read_text()
        for key, value in private.items():
            text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
            assert count == 1, key
        config.write_text(text + f"initial_worker_port={free_port()}\n")
        command = ["torchserve", "--start", f"--model-store={self.layout / 'model-store'}", f"--ts-config={config}"]
        env = {**self.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"}
        out = open(self.workdir / "torchserve.out", "w")
        if self.container:
            entrypoint = [sys.executable, str(ROOT / "mnist_kit" / "deploy" / "entrypoint.py")]
            env |= entrypoint_env(
                drain_seconds=self.drain_seconds,
                health_port=self.health_port,
                inference_url=self.inference_url,
                management_url=self.management_url,
            )
            self.process = subprocess.Popen(
                [*entrypoint, *command], cwd=self.workdir, env=env, stdout=out, stderr=out, start_new_session=True
            )
        else:
            subprocess.run(command, cwd=self.workdir, env=env, stdout=out, stderr=out, check=True)
        out.close()

    def running(self) -> bool:
        # In the foreground the launcher is the process to watch: its PID file appears only after Java starts.
        return self.process.poll() is None if self.container else super().running()

    def stop(self, timeout: float = 30) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        super().stop(timeout)


class Recorded:
    """Stands in for TorchServe's metrics cache: remembers what was reported."""

    def __init__(self):
        self.reported = []

    def add_counter(self, name, value, dimensions=()):
        self.reported.append((name, value, {d.name: d.value for d in dimensions}))

    def add_time(self, name, value, idx=None, unit="ms"):
        self.reported.append((name, value, {}))

    def add_metric(self, name, value, unit, dimensions=(), metric_type=None):
        self.reported.append((name, value, {d.name: d.value for d in dimensions}))


def send_json(handler: BaseHTTPRequestHandler, status: int, answer: dict) -> None:
    """A test server's JSON answer, with its length (keep-alive clients wait for it)."""
    data = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class RecordingServer:
    """A server that answers every prediction 0 at 50 % (any version) and keeps the sha256 of each image sent."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append(hashlib.sha256(body).hexdigest())
                send_json(self, 200, {"digit": 0, "confidence": 0.5})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def in_thread(server):
    """An http.server serving on a thread of its own while the block runs, then shut down and closed. It polls
    for the shutdown every 10 ms: serve_forever's default half second would make every stop wait that long."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def recording_server():
    recorder = RecordingServer()
    with in_thread(recorder.server):
        yield recorder


@contextmanager
def pad_server(
    url: str,
    management_url: str = "",
    model: str = C.MODEL_NAME,
    token=lambda: None,
    manage=lambda: None,
    feedback=None,
):
    """`mnist-kit ui`'s server on a free port, in a thread of this process, asking the TorchServe at `url`; its
    corrections in `feedback` (a Store), else the kit's home."""
    reader = Reader(url, model, management_url or url, token=token, management_token=manage)
    with in_thread(PadServer(reader, port=0, feedback=feedback)) as server:
        yield server


def handwritten_letter(letter: str, font: str = "Rock Salt") -> bytes:
    """`letter` in a handwriting font whose designer the training never saw (the glyph bank's held-out fonts,
    training/handwriting.py), its first drawing, dark on white at 200 px, PNG."""
    from PIL import Image

    from mnist_kit.training import handwriting

    glyphs = handwriting.load()
    index = [f["family"] for f in glyphs.fonts].index(font)
    assert glyphs.fonts[index]["held_out"], f"{font} is a font the training uses"
    first = np.flatnonzero((glyphs.font == index) & (glyphs.chars == ord(letter)))[0]
    image = Image.fromarray(255 - glyphs.images[first]).resize((200, 200), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def printed_letter(letter: str) -> bytes:
    """A letter printed in a font the training's non-digits never used (training/outliers.py), dark on white, PNG."""
    from PIL import Image, ImageDraw, ImageFont

    from mnist_kit.training.fonts import font_dir

    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).text(
        (30, 10), letter, fill=0, font=ImageFont.truetype(str(font_dir() / "STIXGeneral.ttf"), 150)
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
