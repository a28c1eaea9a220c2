"""The serving core: what a worker does with a batch of requests, in named stages, whichever server calls it.

A runtime's adapter (TorchServe's: mnist_handler.py) builds a Core from the archive's folder, hands `decode` each
request's body fields and headers, runs `infer` and `encode` (or `explain`), and writes each Reply back: its
status, its error type and its JSON body. Loading picks the serving form (serving_forms.py); the metrics window
(metrics.py) hands its totals to the adapter's `publish`. Imports no server, and no torch unless a form or an
explanation needs it (eager_forms.py). Packed into the .mar beside the handler.
"""

import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from mnist_kit import constants as C
from mnist_kit.worker import answers, preprocess, protocols, request_bodies, serving_forms
from mnist_kit.worker.answers import Answer
from mnist_kit.worker.metrics import MetricsWindow
from mnist_kit.worker.request_errors import InputError

# The error type named beside each status, in TorchServe's words (its frontend's own exceptions).
ERROR_TYPES = {
    400: "BadRequestException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "RequestEntityTooLargeException",
    415: "UnsupportedMediaTypeException",
    422: "UnprocessableEntityException",
    500: "InternalServerException",
    501: "NotImplementedException",
}


@dataclass
class Reply:
    """One request's answer: a JSON text (an answer), or an error object with its status, error type and reason (the
    InputError's metric label)."""

    body: str | dict
    status: int = 200
    error_type: str | None = None
    reason: str | None = None


@dataclass
class Batch:
    """The requests of one batch, decoded, and the Answer of each of their pictures once inferred."""

    requests: list[protocols.Request]
    preprocessing_ms: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    @property
    def pictures(self) -> list[preprocess.Picture]:
        return [picture for request in self.requests for picture in request.images]


class Core:
    """One worker's serving core: the loaded serving form (`model`, a callable from normalised pixels to log
    probabilities; `form`, why it was chosen and its timings), the model's name and version its answers carry, the
    float network for explanations (loaded on first use) and the metrics window. The answers' thresholds are no
    state of its own: they are the constants every runtime shares (C.NOT_A_DIGIT_BELOW, C.LOW_CONFIDENCE; answers.py).

    A runtime's adapter runs a batch through `decode` → `infer` → `encode` (or `decode` → `explain`) and writes
    each Reply back; `describe` says what it serves (`mnist-kit models describe`):

        core = Core(model_dir, manifest["model"], publish=publish)
        batch = core.decode([{"body": png_bytes}], [{"content-type": "image/png"}])
        (reply,) = core.encode(core.infer(batch))
        reply.status, reply.body  # 200, '{"digit": 7, "confidence": 0.99..., "flags": [], ...}'
    """

    def __init__(
        self, model_dir: str, model: dict, *, serving_form=None, device="cpu", publish=None, with_torch: bool = True
    ):
        """Load the archive in model_dir and pick its serving form: timed on this CPU among those that load here
        (serving_forms.py). `model` is the manifest's model section; serving_form, where given and not "auto", is served
        whatever the timings (C.SERVING_FORM_ENV overrides it); with_torch=False loads PyTorch only where no ONNX
        form loads (a torch-free server); publish(list of metrics.Metric) is called once a second."""
        self.device = device
        self.model_name = model.get("modelName", C.MODEL_NAME)
        self.model_version = model.get("modelVersion", C.MODEL_VERSION)
        self.weights = os.path.join(model_dir, model["serializedFile"])
        forced = os.environ.get(C.SERVING_FORM_ENV) or serving_form
        candidates = serving_forms.load(model_dir, self.weights, with_torch=with_torch, forced=forced, device=device)
        if not candidates:
            raise RuntimeError(f"no serving form of {model_dir} loads here: see the log lines above")
        timed = len(candidates) > 1 and forced in (None, "", "auto")
        self.form_timings = serving_forms.measure(candidates) if timed else {name: {} for name in candidates}
        self.form, self.form_reason = serving_forms.choose(self.form_timings, forced)
        self.model = candidates[self.form]
        self._float_model = None
        self.metrics = MetricsWindow(publish or (lambda totals: None), serving_form=self.form)

    def describe(self) -> dict:
        """What this worker serves, and why (`mnist-kit models describe`); the libraries it serves with."""
        onnxruntime, torch = sys.modules.get("onnxruntime"), sys.modules.get("torch")
        return {
            "serving_form": self.form,
            "reason": self.form_reason,
            "timings_ms": self.form_timings,
            "onnxruntime": onnxruntime.__version__ if onnxruntime else None,
            "torch": torch.__version__ if torch else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability() if torch else None,
        }

    def decode(self, rows: list[dict], headers: list[dict]) -> Batch:
        """Each request's body fields and headers → its Request: protocol and pictures, or the InputError that says
        what is wrong with it. A bug of ours fails its own request with a 500, not the batch or the worker."""
        start = time.perf_counter()
        decoded = []
        for row, row_headers in zip(rows, headers):
            try:
                decoded.append(request_bodies.read(row, row_headers))
            except Exception as e:
                error = InputError(f"preprocessing failed: {type(e).__name__}: {e}", 500, reason="internal")
                decoded.append(protocols.Request(protocols.PLAIN, [], error=error))
        return Batch(decoded, (time.perf_counter() - start) * 1000)

    def infer(self, batch: Batch) -> Batch:
        """One forward pass over the pictures of every request, and the digits of those holding several: each
        picture's Answer (probabilities in float64 to 6 decimals, and its flags)."""
        pictures = batch.pictures
        if pictures:
            log_probabilities = self.model(preprocess.model_input(answers.images(pictures)))
            probabilities = np.exp(log_probabilities, dtype=np.float64).round(6)
            batch.answers = answers.answers(pictures, probabilities)
        return batch

    def encode(self, batch: Batch) -> list[Reply]:
        """Each request's Reply in its protocol, from its pictures' Answers; a strict request holding no digit gets a
        422. The batch is counted in the metrics."""
        replies, found = [], iter(batch.answers)
        for request in batch.requests:
            mine = [next(found) for _ in request.images]
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
                replies.append(error_reply(request.error, request.protocol))
            else:
                replies.append(
                    Reply(protocols.answer(request, mine, self.model_name, model_version=self.model_version))
                )
        self.metrics.add(
            [a.digit for a in batch.answers],
            [a.confidence for a in batch.answers],
            [r.error.reason for r in batch.requests if r.error],
            preprocessing_ms=batch.preprocessing_ms,
            requests=len(batch.requests),
            flags=[a.flags for a in batch.answers],
        )
        return replies

    def explain(self, batch: Batch) -> list[Reply]:
        """Integrated Gradients attributions of the predicted digit over the 28×28 input, for each image of each
        request (/explanations, v1 :explain, v2 /explain)."""
        replies = []
        for request in batch.requests:
            error = request.error or self._cannot_explain()
            if error:
                replies.append(error_reply(error, request.protocol))
                continue
            explained = [self._explain(picture.pixels) for picture in request.images]
            replies.append(
                Reply(protocols.explanation(request, explained, self.model_name, model_version=self.model_version))
            )
        return replies

    def _cannot_explain(self) -> InputError | None:
        """Why this worker cannot explain, or None: explanations take gradients of the float network, so they need
        PyTorch and Captum, imported on the first explanation (a torch-free server imports them only then)."""
        missing = [name for name in ("torch", "captum") if importlib.util.find_spec(name) is None]
        if missing:
            return InputError(
                f"explanations need PyTorch and Captum, and this server lacks {' and '.join(missing)}: install them "
                "where it runs (pip install 'mnist-kit[train]'), or ask a server that has them; predictions work as "
                "they are",
                501,
                reason="no_explanations",
            )
        return None

    @property
    def float_model(self):
        """The float network, for explanations: loaded on first use."""
        if self._float_model is None:
            from mnist_kit.worker import eager_forms

            self._float_model = eager_forms.float_model(self.weights, self.device)
        return self._float_model

    def _explain(self, pixels: np.ndarray) -> dict:
        import torch
        from captum.attr import IntegratedGradients  # only here: Captum is slow to import and rarely needed

        x = torch.from_numpy(preprocess.model_input([pixels])).to(self.device)
        with torch.no_grad():
            digit = int(self.float_model(x).argmax(1))
        baseline = torch.from_numpy(preprocess.model_input([np.zeros_like(pixels)])).to(self.device)
        attributions = IntegratedGradients(self.float_model).attribute(
            x, baselines=baseline, target=digit, n_steps=C.EXPLAIN_STEPS
        )
        return {
            "digit": digit,
            "pixels": pixels.tolist(),
            "attributions": attributions[0, 0].round(decimals=6).tolist(),
        }


def error_reply(error: InputError, protocol: str = protocols.PLAIN) -> Reply:
    error_type = ERROR_TYPES.get(error.status, "Error")
    body = protocols.error_body(protocol, error.status, str(error), error_type=error_type)
    return Reply(body, error.status, error_type, error.reason)
