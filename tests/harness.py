"""Test tooling around a private TorchServe: authenticated GETs, counting lines in its logs, the drawing pad's
server in front of it, and a letter to show it."""

import io
import json
import threading
import zipfile
from contextlib import contextmanager

import torch

from mnist_kit import constants as C
from mnist_kit.serving import client
from mnist_kit.serving.process import PrivateServer
from mnist_kit.ui.reading import Reader
from mnist_kit.ui.server import PadServer
from mnist_model import MnistClassificationNet


class TorchServe(PrivateServer):
    """A private TorchServe (free ports, own temp dir, always stopped) with what tests ask of it."""

    def get(self, url: str) -> bytes:
        token = self.management_token if url.startswith(self.management_url) else self.token
        return client.request(url, token=token, timeout=10)

    def count_in_log(self, text: str, log: str = "model_log.log") -> int:
        path = self.workdir / "logs" / log
        return path.read_text(errors="replace").count(text) if path.is_file() else 0

    def served_form(self, archive, model: str = C.MODEL_NAME) -> torch.nn.Module:
        """The form the workers chose (their describe answer), loaded in this process from `archive`."""
        form = client.described(self.management_url, model, self.management_token)[1]["serving_form"]
        with zipfile.ZipFile(archive) as z:
            weights = io.BytesIO(z.read(json.loads(z.read(C.FORMS_FILE))["forms"][form]["file"]))
        if form == "int8":
            return torch.jit.load(weights)
        network = MnistClassificationNet()
        network.load_state_dict(torch.load(weights, weights_only=True))
        return network.eval()


@contextmanager
def pad_server(url: str, management_url: str = "", model: str = C.MODEL_NAME, token=lambda: None, manage=lambda: None):
    """`mnist-kit ui`'s server on a free port, in a thread of this process, asking the TorchServe at `url`."""
    server = PadServer(Reader(url, model, management_url or url, token=token, management_token=manage), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def printed_letter(letter: str) -> bytes:
    """A letter printed in a font the training's non-digits never used (training/outliers.py), dark on white, PNG."""
    from PIL import Image, ImageDraw, ImageFont

    from mnist_kit.training.variants import font_dir

    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).text(
        (30, 10), letter, fill=0, font=ImageFont.truetype(str(font_dir() / "STIXGeneral.ttf"), 150)
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
