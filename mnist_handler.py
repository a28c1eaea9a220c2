"""TorchServe handler: image requests in, {"digit", "confidence", "probabilities"} per request out.

Thin on purpose: decoding and normalisation live in mnist_preprocess, the network in mnist_model. A request
the model cannot read gets its own 4xx with a JSON message; the other requests of its batch are answered as usual.
"""

import json

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.image_classifier import ImageClassifier

import mnist_constants as C
import mnist_preprocess
from mnist_model import MnistClassificationNet

ERROR_TYPES = {400: "BadRequestException", 413: "RequestEntityTooLargeException",
               415: "UnsupportedMediaTypeException", 500: "InternalServerException"}


class MnistHandler(ImageClassifier):
    def initialize(self, context):
        # One intra-op thread per worker: with one worker per core, larger pools fight over the cores.
        torch.set_num_threads(1)
        if "x86" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "x86"  # what int8 archives were quantised for
        super().initialize(context)
        # VisionHandler lifts PIL's decompression-bomb limit unless limit_max_image_pixels is set; keep ours.
        Image.MAX_IMAGE_PIXELS = C.MAX_IMAGE_PIXELS

    def _load_pickled_model(self, model_dir, model_file, model_pt_path):
        """The base class's loader, but with weights_only=True: a .mar's weights are never executed as pickle code."""
        model = MnistClassificationNet()
        model.load_state_dict(torch.load(model_pt_path, map_location=self.device, weights_only=True))
        return model

    def handle(self, data, context):
        self.context = context
        answers, pixels = [None] * len(data), []
        for i, row in enumerate(data):
            try:
                pixels.append(mnist_preprocess.request_to_pixels(row, self._content_type(i, row)))
            except mnist_preprocess.InputError as e:
                answers[i] = self._error(i, e.status, str(e))
            except Exception as e:  # a bug of ours must not take the batch or the worker down
                answers[i] = self._error(i, 500, f"preprocessing failed: {type(e).__name__}: {e}")
        if pixels:
            x = mnist_preprocess.normalize(torch.from_numpy(np.stack(pixels))).to(self.device)
            with torch.inference_mode():
                results = iter(self.postprocess(self.model(x)))
            answers = [answer if answer is not None else next(results) for answer in answers]
        for i in range(len(data)):
            context.set_response_content_type(i, "application/json")
        return answers

    def postprocess(self, data):
        """One JSON text per image, serialised here: TorchServe would pretty-print dicts, at twice the cost."""
        probabilities = data.float().exp()
        confidence, digit = probabilities.max(dim=1)
        return [
            json.dumps({"digit": d, "confidence": round(c, 6), "probabilities": [round(v, 6) for v in p]})
            for d, c, p in zip(digit.tolist(), confidence.tolist(), probabilities.tolist())
        ]

    def _content_type(self, i: int, row: dict) -> str | None:
        """The content type of the part that carries the payload (multipart parts have their own), else the request's."""
        headers = self.context.get_all_request_header(i)
        for name in ("data", "file", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type")
        return next((v for k, v in headers.items() if k.lower() == "content-type" and isinstance(v, str)), None)

    def _error(self, i: int, status: int, message: str) -> dict:
        self.context.set_response_status(status, ERROR_TYPES.get(status, "Error"), i)
        return {"code": status, "type": ERROR_TYPES.get(status, "Error"), "message": message}
