"""Test tooling around a private TorchServe: authenticated GETs and counting lines in its logs."""

from mnist_kit import client
from mnist_kit.server import PrivateServer


class TorchServe(PrivateServer):
    """A private TorchServe (free ports, own temp dir, always stopped) with what tests ask of it."""

    def get(self, url: str) -> bytes:
        token = self.management_token if url.startswith(self.management_url) else self.token
        return client.request(url, token=token, timeout=10)

    def count_in_log(self, text: str, log: str = "model_log.log") -> int:
        path = self.workdir / "logs" / log
        return path.read_text(errors="replace").count(text) if path.is_file() else 0
