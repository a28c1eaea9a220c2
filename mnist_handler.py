"""TorchServe handler: image requests in, {"digit", "confidence", "probabilities"} per request out.

Thin on purpose: decoding and normalisation live in mnist_preprocess, the network in mnist_model. A request
the model cannot read gets its own 4xx with a JSON message; the other requests of its batch are answered as usual.
It reports PredictionsPerDigit, LowConfidencePredictions, PreprocessingTime and RejectedInputs (by reason)
to TorchServe's metrics once a second, and /explanations answers Integrated Gradients attributions.
"""

import json
import os
import time

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.image_classifier import ImageClassifier

from mnist_kit import constants as C
from mnist_kit.worker import preprocess as mnist_preprocess
from mnist_kit.worker.metrics import MetricsWindow
from mnist_model import MnistClassificationNet

ERROR_TYPES = {400: "BadRequestException", 413: "RequestEntityTooLargeException",
               415: "UnsupportedMediaTypeException", 500: "InternalServerException", 501: "NotImplementedException"}


class MnistHandler(ImageClassifier):
    def initialize(self, context):
        # One intra-op thread per worker: with one worker per core, larger pools fight over the cores.
        torch.set_num_threads(1)
        if "x86" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "x86"  # what int8 archives were quantised for
        super().initialize(context)
        # VisionHandler lifts PIL's decompression-bomb limit unless limit_max_image_pixels is set; keep ours.
        Image.MAX_IMAGE_PIXELS = C.MAX_IMAGE_PIXELS
        # Explanations need gradients: the float model itself (eager archives) or its weights packed beside.
        self.float_model = self.model if isinstance(self.model, MnistClassificationNet) else None
        weights = os.path.join(context.system_properties.get("model_dir"), C.EXPLAIN_WEIGHTS)
        if self.float_model is None and os.path.isfile(weights):
            self.float_model = self._load_pickled_model(None, None, weights).eval()
        self.metrics_window = MetricsWindow(context.metrics)

    def _load_pickled_model(self, model_dir, model_file, model_pt_path):
        """The base class's loader, but with weights_only=True: a .mar's weights are never executed as pickle code."""
        model = MnistClassificationNet()
        model.load_state_dict(torch.load(model_pt_path, map_location=self.device, weights_only=True))
        return model

    def handle(self, data, context):
        self.context = context
        if self._is_explain():
            return self.explanations(data)
        start = time.perf_counter()
        answers, pixels, rejected = [None] * len(data), [], []
        for i, row in enumerate(data):
            try:
                pixels.append(mnist_preprocess.request_to_pixels(row, self._content_type(i, row)))
            except mnist_preprocess.InputError as e:
                answers[i] = self._error(i, e.status, str(e))
                rejected.append(e.reason)
            except Exception as e:  # a bug of ours must not take the batch or the worker down
                answers[i] = self._error(i, 500, f"preprocessing failed: {type(e).__name__}: {e}")
                rejected.append("internal")
        preprocessing_ms = (time.perf_counter() - start) * 1000
        digits, rows = [], []
        if pixels:
            with torch.inference_mode():
                log_probabilities = self.model(mnist_preprocess.model_input(pixels).to(self.device))
            probabilities = np.exp(log_probabilities.float().cpu().numpy(), dtype=np.float64)
            digits, rows = probabilities.argmax(axis=1).tolist(), probabilities.round(6).tolist()
            results = iter(map(self.to_json, digits, rows))
            answers = [answer if answer is not None else next(results) for answer in answers]
        for i in range(len(data)):
            context.set_response_content_type(i, "application/json")
        confidences = [row[d] for d, row in zip(digits, rows)]
        self.metrics_window.add(digits, confidences, rejected, preprocessing_ms, len(data))
        return answers

    @staticmethod
    def to_json(digit: int, probabilities: list[float]) -> str:
        """The answer, written here: TorchServe would pretty-print a dict at several times the cost. Probabilities
        come rounded to 6 decimals in float64, so each prints in its shortest form."""
        return (f'{{"digit": {digit}, "confidence": {probabilities[digit]!r}, '
                f'"probabilities": [{", ".join(map(repr, probabilities))}]}}')

    def explanations(self, data):
        """/explanations: Integrated Gradients attributions of the predicted digit over the 28×28 input."""
        from captum.attr import IntegratedGradients

        if self.float_model is None:
            return [self._error(i, 501, "this archive has no float weights to explain with") for i in range(len(data))]
        answers = []
        for i, row in enumerate(data):
            try:
                pixels = mnist_preprocess.request_to_pixels(row, self._content_type(i, row))
            except mnist_preprocess.InputError as e:
                answers.append(self._error(i, e.status, str(e)))
                continue
            x = mnist_preprocess.model_input([pixels])
            with torch.no_grad():
                digit = int(self.float_model(x).argmax(1))
            baseline = mnist_preprocess.model_input([np.zeros_like(pixels)])
            attributions = IntegratedGradients(self.float_model).attribute(x, baselines=baseline, target=digit,
                                                                           n_steps=C.EXPLAIN_STEPS)
            answers.append(json.dumps({"digit": digit, "pixels": pixels.tolist(),
                                       "attributions": attributions[0, 0].round(decimals=6).tolist()}))
            self.context.set_response_content_type(i, "application/json")
        return answers

    def _content_type(self, i: int, row: dict) -> str | None:
        """The content type of the part carrying the payload (multipart parts have their own), else the request's."""
        headers = self.context.get_all_request_header(i)
        for name in ("data", "file", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type")
        return next((v for k, v in headers.items() if k.lower() == "content-type" and isinstance(v, str)), None)

    def _error(self, i: int, status: int, message: str) -> dict:
        self.context.set_response_status(status, ERROR_TYPES.get(status, "Error"), i)
        return {"code": status, "type": ERROR_TYPES.get(status, "Error"), "message": message}
