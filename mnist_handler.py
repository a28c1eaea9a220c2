"""TorchServe handler: image requests in, {"digit", "confidence", "flags", "probabilities"} per request out.

TorchServe's BaseHandler in three stages, as its own handle() names them: preprocess decodes each row (one
request) to its 28×28 images or its InputError, inference runs one batched forward pass over the images of all
rows, postprocess encodes an answer per row (a 4xx JSON error for the rows that did not decode). A row holds one
image (/predictions), or a KServe v1 or Open Inference Protocol v2 body (/v1, /v2) with several, read and answered
in mnist_kit.worker.protocols, since TorchServe's own envelopes lose batched requests. Decoding lives in
mnist_kit.worker.preprocess, what an answer says beside its digit in mnist_kit.worker.answers, the network in
mnist_model. The handler's own metrics go to TorchServe once a
second (mnist_kit.worker.metrics), and /explanations answers Integrated Gradients attributions.
"""

import json
import logging
import os
import time

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from mnist_kit import constants as C
from mnist_kit.worker import answers, forms, preprocess, protocols
from mnist_kit.worker.metrics import MetricsWindow
from mnist_kit.worker.preprocess import InputError, Picture
from mnist_model import from_state_dict

logger = logging.getLogger(__name__)
protocols.bypass_envelopes()  # before TorchServe's model loader wraps the handler in one

ERROR_TYPES = {
    400: "BadRequestException",
    413: "RequestEntityTooLargeException",
    415: "UnsupportedMediaTypeException",
    422: "UnprocessableEntityException",
    500: "InternalServerException",
    501: "NotImplementedException",
}


class MnistHandler(BaseHandler):
    def initialize(self, context):
        """Load the archive's model and pick its serving form: timed on this CPU among those the archive carries
        (mnist_kit.worker.forms), else its only one (TorchScript, or a state_dict with mnist_model.py)."""
        # One intra-op thread per worker: with one worker per core, larger pools fight over the cores.
        torch.set_num_threads(1)
        self.context, self.manifest = context, context.manifest
        gpu = context.system_properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu")
        model_dir = context.system_properties["model_dir"]
        weights = os.path.join(model_dir, self.manifest["model"]["serializedFile"])
        if self.manifest["model"].get("modelFile") or forms.read_manifest(model_dir):
            self.float_model = from_state_dict(weights, self.device)
            candidates = forms.load(model_dir, self.float_model, self.device) or {"fp32": self.float_model}
        else:
            # Explanations need gradients: the float weights packed beside an int8 or script model.
            explain_weights = os.path.join(model_dir, C.EXPLAIN_WEIGHTS)
            has_float = os.path.isfile(explain_weights)
            self.float_model = from_state_dict(explain_weights, self.device) if has_float else None
            candidates = {"torchscript": forms.load_torchscript(weights, self.device)}
        forced = os.environ.get(C.SERVING_FORM_ENV) or (context.model_yaml_config.get("handler") or {}).get(
            "serving_form"
        )
        timed = len(candidates) > 1 and forced in (None, "", "auto")
        self.form_timings = forms.measure(candidates) if timed else {name: {} for name in candidates}
        self.form, self.form_reason = forms.choose(self.form_timings, forced)
        self.model = candidates[self.form]
        logger.info("serving form %s: %s", self.form, self.form_reason)
        self.metrics_window = MetricsWindow(context.metrics, serving_form=self.form)
        self.initialized = True

    def describe_handle(self) -> str:
        """GET /models/mnist?customized=true (mnist-kit models describe): what this worker serves, and why."""
        return json.dumps(
            {
                "serving_form": self.form,
                "reason": self.form_reason,
                "timings_ms": self.form_timings,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "torch": torch.__version__,
            }
        )

    def handle(self, data, context):
        self.context = context
        if context.get_request_header(0, "describe") == "True":
            return [self.describe_handle()]
        start = time.perf_counter()
        requests = self.preprocess(data)
        preprocessing_ms = (time.perf_counter() - start) * 1000
        if context.get_request_header(0, "explain") == "True":
            return self.explain_handle(requests)
        results = self.inference([picture for request in requests for picture in request.images])
        replies = self.postprocess(requests, results)
        self.metrics_window.add(
            [a.digit for a in results],
            [a.confidence for a in results],
            [r.error.reason for r in requests if r.error],
            preprocessing_ms,
            len(data),
            flags=[a.flags for a in results],
        )
        return replies

    def preprocess(self, data) -> list[protocols.Request]:
        """Decode: each row → a protocols.Request: its protocol and images (uint8 28×28), or the InputError that
        says what is wrong with it."""
        requests = []
        for i, row in enumerate(data):
            try:
                headers = self.context.get_all_request_header(i)
                requests.append(protocols.read(row, self._content_type(headers, row), headers))
            except Exception as e:  # a bug of ours must not take the batch or the worker down
                error = InputError(f"preprocessing failed: {type(e).__name__}: {e}", 500, reason="internal")
                requests.append(protocols.Request(protocols.PLAIN, [], error=error))
        return requests

    def inference(self, pictures: list[Picture]) -> list[answers.Answer]:
        """One forward pass over the pictures of all rows, and the digits of those holding several: each picture's
        Answer (probabilities in float64, 6 decimals, and its flags)."""
        if not pictures:
            return []
        with torch.inference_mode():
            log_probabilities = self.model(preprocess.model_input(answers.images(pictures)).to(self.device))
        probabilities = np.exp(log_probabilities.float().cpu().numpy(), dtype=np.float64).round(6)
        return answers.answers(pictures, probabilities)

    def postprocess(self, requests: list[protocols.Request], results: list[answers.Answer]) -> list:
        """Encode: an answer per request in its protocol, from its pictures' Answers (the next of `results`);
        JSON either way, and a request that failed gets its own status (422 for a strict one holding no digit)."""
        replies, results = [], iter(results)
        for i, request in enumerate(requests):
            mine = [next(results) for _ in request.images]
            refused = [n for n, a in enumerate(mine) if "not_a_digit" in a.flags] if request.strict else []
            if refused:
                which = "the image" if len(mine) == 1 else f"image {refused[0]}"
                request.error = InputError(
                    f"{which} is not a digit (not_a_digit: no digit has {C.NOT_A_DIGIT_BELOW:.0%} of the "
                    f"probability); sent without {C.STRICT_HEADER}, it is answered with the flag",
                    422,
                    reason="not_a_digit",
                )
            if request.error:
                replies.append(self._error(i, request.error, request.protocol))
            else:
                replies.append(protocols.answer(request, mine, *self._model_id()))
            self.context.set_response_content_type(i, "application/json")
        return replies

    def explain_handle(self, requests: list[protocols.Request]) -> list:
        """/explanations (and v1 :explain, v2 /explain): Integrated Gradients attributions of the predicted digit
        over the 28×28 input, for each image of each request."""
        answers = []
        for i, request in enumerate(requests):
            if request.error or self.float_model is None:
                error = request.error or InputError("this archive has no float weights to explain with", 501)
                answers.append(self._error(i, error, request.protocol))
                continue
            explained = [self._explain(picture.pixels) for picture in request.images]
            answers.append(protocols.explanation(request, explained, *self._model_id()))
            self.context.set_response_content_type(i, "application/json")
        return answers

    def _explain(self, pixels: np.ndarray) -> dict:
        from captum.attr import IntegratedGradients  # only here: Captum is slow to import and rarely needed

        x = preprocess.model_input([pixels]).to(self.device)
        with torch.no_grad():
            digit = int(self.float_model(x).argmax(1))
        baseline = preprocess.model_input([np.zeros_like(pixels)]).to(self.device)
        attributions = IntegratedGradients(self.float_model).attribute(
            x, baselines=baseline, target=digit, n_steps=C.EXPLAIN_STEPS
        )
        attributions = attributions[0, 0].round(decimals=6).tolist()
        return {"digit": digit, "pixels": pixels.tolist(), "attributions": attributions}

    def _model_id(self) -> tuple[str, str]:
        """The model's name and version, for v2 answers: TorchServe's manifest, as the frontend knows them."""
        model = self.manifest.get("model", {})
        return model.get("modelName", C.MODEL_NAME), model.get("modelVersion", C.MODEL_VERSION)

    @staticmethod
    def _content_type(headers: dict, row: dict) -> str | None:
        """The content type of the part carrying the payload (multipart parts have their own), else the request's."""
        for name in ("data", "file", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type")
        return protocols.header(headers, "content-type") or None

    def _error(self, i: int, error: InputError, protocol: str = protocols.PLAIN) -> dict:
        error_type = ERROR_TYPES.get(error.status, "Error")
        self.context.set_response_status(error.status, error_type, i)
        self.context.set_response_content_type(i, "application/json")
        return protocols.error_body(protocol, error.status, str(error), error_type)
