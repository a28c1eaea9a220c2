"""Test tooling around a private TorchServe: authenticated GETs, counting lines in its logs, and the drawing
pad's server in front of it."""

import threading
from contextlib import contextmanager

from mnist_kit import client
from mnist_kit import constants as C
from mnist_kit.reading import Reader
from mnist_kit.server import PrivateServer
from mnist_kit.ui.server import PadServer


class TorchServe(PrivateServer):
    """A private TorchServe (free ports, own temp dir, always stopped) with what tests ask of it."""

    def get(self, url: str) -> bytes:
        token = self.management_token if url.startswith(self.management_url) else self.token
        return client.request(url, token=token, timeout=10)

    def count_in_log(self, text: str, log: str = "model_log.log") -> int:
        path = self.workdir / "logs" / log
        return path.read_text(errors="replace").count(text) if path.is_file() else 0


@contextmanager
def pad_server(url: str, management_url: str = "", model: str = C.MODEL_NAME, token=lambda: None, manage=lambda: None):
    """`mnist-kit ui`'s server on a free port, in a thread of this process, asking the TorchServe at `url`."""
    server = PadServer(Reader(url, model, management_url or url, token, manage), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
