"""The kit on KServe's ModelServer (`mnist-kit serve --runtime kserve`): a kserve.Model over the same serving core
(worker/core.py) and the same .mar that TorchServe serves, and the metrics it publishes on ModelServer's /metrics.

Its REST routes are routes.py's (read and answered through rest.py, as the hot path in front of them does); here,
gRPC v2 (ModelInfer) reaches the model's predict with KServe's InferRequest, turned back into the v2 request the core
reads; a bad request there is INVALID_ARGUMENT with the same message as over REST.
"""

import json
import struct
import tempfile

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Gauge, Histogram

from mnist_kit import constants as C
from mnist_kit.packaging import mar
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.worker import protocols
from mnist_kit.worker.core import Core

# The core's own metrics (worker/metrics.py), as TorchServe publishes them, on ModelServer's /metrics.
COUNTERS = {
    "PredictionsPerDigit": Counter("PredictionsPerDigit", "Answers per digit", ["Digit"]),
    "FlaggedPredictions": Counter("FlaggedPredictions", "Answers carrying each flag", ["Flag"]),
    "RejectedInputs": Counter("RejectedInputs", "Requests refused, by reason", ["Reason"]),
    "LowConfidencePredictions": Counter("LowConfidencePredictions", "Answers below the confidence threshold"),
}
PREPROCESSING_TIME = Gauge("PreprocessingTime", "Milliseconds per request to decode, over the last interval")
SERVING_FORM = Gauge("ServingForm", "The form this worker serves (1)", ["Form"])
BATCH_SIZE = Histogram("BatchSize", "Requests per forward pass", buckets=(1, 2, 4, 8, 12, 16))
QUEUE_TIME = Histogram(
    "QueueTime", "Milliseconds a batch's oldest request waited for it", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50)
)


def batched(size: int, waited_ms: float) -> None:
    BATCH_SIZE.observe(size)
    QUEUE_TIME.observe(waited_ms)


def publish(totals) -> None:
    for m in totals:
        if m.name in COUNTERS:
            (COUNTERS[m.name].labels(**m.dimensions) if m.dimensions else COUNTERS[m.name]).inc(m.value)
        elif m.name == "PreprocessingTime":
            PREPROCESSING_TIME.set(m.value)
        elif m.name == "ServingForm":
            SERVING_FORM.labels(**m.dimensions).set(m.value)


class MnistModel(Model):
    """The one model a kserve runtime's worker serves: the archive (`mar.read`: its name, version, manifest), and once
    loaded the serving core over its unpacked folder, the micro-batcher that shares the core's forward passes, and
    the drain state (`draining`: readiness 503, everything else answered).

    server.py builds it, calls `load` before binding, registers it with ModelServer (health, metadata, gRPC v2
    reach `predict`) and hands it to routes.py (add_routes, add_management_routes) and HotPath, whose REST
    requests reach `batcher` (and `core` for explanations and descriptions); a stop signal calls `drain`.
    """

    def __init__(self, archive, *, serving_form: str | None = None):
        self.archive = mar.read(archive)
        super().__init__(self.archive.model_name)
        self.version = self.archive.version
        self.serving_form = serving_form
        self.draining = False  # going away: readiness says 503, everything else is answered as usual

    def drain(self) -> None:
        self.draining = True

    def load(self) -> bool:
        """Unpack the archive as TorchServe would and load it into the core: the same serving form chosen the same
        way (timed on this CPU unless forced)."""
        # Removed when the process ends (the object's finalizer), as TorchServe removes a worker's model_dir.
        self.unpacked = tempfile.TemporaryDirectory(prefix="mnist-kit-kserve-")
        folder = self.archive.extract(self.unpacked.name)
        forced = self.serving_form or (self.archive.config.get("handler") or {}).get("serving_form")
        # Torch-free where the archive has an ONNX form that loads: PyTorch only for its eager forms where none does.
        self.core = Core(str(folder), self.archive.model, serving_form=forced, publish=publish, with_torch=False)
        self.batcher = MicroBatcher(self.core, on_batch=batched)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [{"name": "images", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, C.NUM_CLASSES]},
            {"name": "flags", "datatype": "BYTES", "shape": [-1]},
        ]

    async def predict(self, payload, headers=None):
        """gRPC ModelInfer (and anything else ModelServer hands over): the core's v2 answer as an InferResponse."""
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model reads Open Inference Protocol (v2) requests here")
        row, row_headers = v2_row(payload)
        reply = await self.batcher.submit(row, {**(headers or {}), **row_headers})
        if reply.status != 200:
            raise InvalidInput(reply.body["error"])
        answer = json.loads(reply.body)
        outputs = [InferOutput(o["name"], o["shape"], o["datatype"], data=o["data"]) for o in answer["outputs"]]
        # Binary (raw_output_contents): what Triton's clients read; its typed contents they do not.
        return InferResponse(
            answer.get("id"),
            answer["model_name"],
            outputs,
            model_version=answer["model_version"],
            use_binary_outputs=True,
        )


def v2_row(request: InferRequest) -> tuple[dict, dict]:
    """KServe's parsed v2 request → the request body TorchServe would hand the handler: the JSON document, and the
    BYTES elements (image files) after it in Triton's binary form, so the core reads it as it reads REST."""
    document: dict = {"inputs": []}
    if request.id:
        document["id"] = request.id
    if request.request_outputs:
        document["outputs"] = [{"name": o.name} for o in request.request_outputs]
    binary = b""
    for tensor in request.inputs:
        entry = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        values = tensor.as_numpy()
        if tensor.datatype == "BYTES":
            elements = [v if isinstance(v, bytes) else str(v).encode() for v in values.reshape(-1)]
            raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary += raw
        else:
            entry["data"] = np.asarray(values).reshape(-1).tolist()
        document["inputs"].append(entry)
    if not binary:
        return {"body": document}, {}
    head = json.dumps(document).encode()
    return {"body": head + binary}, {protocols.BINARY_HEADER: str(len(head))}
