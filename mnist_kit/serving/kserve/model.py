"""The kit on KServe's ModelServer (`mnist-kit serve --runtime kserve`): a kserve.Model over the same serving core
(worker/core.py) and the same .mar that TorchServe serves.

REST requests (/predictions/NAME and /explanations/NAME as TorchServe has them, KServe v1 /v1/models/NAME:predict
and :explain, Open Inference Protocol v2 /v2/models/NAME/infer and explain, JSON or binary) reach the core as
TorchServe hands them to its handler, through the micro-batcher: the answers and the error messages are those of
the TorchServe path. They are routes added to ModelServer's FastAPI app ahead of its own, which answers the rest:
health, model metadata, /metrics. TorchServe's management reads (GET /models, /models/NAME) answer on the same port,
read-only, so `mnist-kit models list|describe` work against either runtime. gRPC v2 (ModelInfer) reaches the
model's predict with KServe's InferRequest, turned back into the v2 request the core reads; a bad request there is
INVALID_ARGUMENT with the same message.
"""

import json
import os
import struct
import tempfile

import numpy as np
from fastapi import FastAPI, Request, Response
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Gauge, Histogram

from mnist_kit import constants as C
from mnist_kit.packaging import mar
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.worker import protocols
from mnist_kit.worker.core import Core, Reply, error_reply
from mnist_kit.worker.request_bodies import media_type
from mnist_kit.worker.request_errors import InputError

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


def add_routes(app: FastAPI, model: MnistModel) -> None:
    """The REST routes that reach the core as TorchServe's do; added before ModelServer registers its own, so these
    answer first."""

    async def answer(request: Request, name: str, version: str | None = None, *, explain: bool = False) -> Response:
        if name != model.name or version not in (None, model.version):
            return reply_response(not_found(model, f"{name}/{version}" if version else name))
        row, headers = await torchserve_row(request)
        if explain:
            headers["explain"] = "True"  # as TorchServe's frontend marks explanations
            (reply,) = await model.batcher.run(lambda: model.core.explain(model.core.decode([row], [headers])))
        else:
            reply = await model.batcher.submit(row, headers)
        return reply_response(reply)

    async def predictions(request: Request, name: str, version: str | None = None):
        return await answer(request, name, version)

    async def explanations(request: Request, name: str, version: str | None = None):
        return await answer(request, name, version, explain=True)

    async def v1_predict(request: Request, name: str):
        return await answer(request, name)

    async def v1_explain(request: Request, name: str):
        return await answer(request, name, explain=True)

    async def v2_infer(request: Request, name: str, version: str | None = None):
        return await answer(request, name, version)

    async def v2_explain(request: Request, name: str):
        return await answer(request, name, explain=True)

    def readiness(body: dict, ready: bool) -> Response:
        return Response(json.dumps(body), status_code=200 if ready else 503, media_type="application/json")

    async def ping():  # TorchServe's health check
        ready = model.ready and not model.draining
        return readiness({"status": "Healthy" if ready else "Draining" if model.draining else "Unhealthy"}, ready)

    async def server_ready():  # ahead of KServe's, which cannot say a server is going away
        ready = model.ready and not model.draining
        return readiness({"ready": ready}, ready)

    app.add_api_route("/ping", ping, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"], include_in_schema=False)
    for path, endpoint in (
        ("/predictions/{name}", predictions),
        ("/predictions/{name}/{version}", predictions),
        ("/explanations/{name}", explanations),
        ("/explanations/{name}/{version}", explanations),
        ("/v1/models/{name}:predict", v1_predict),
        ("/v1/models/{name}:explain", v1_explain),
        ("/v2/models/{name}/infer", v2_infer),
        ("/v2/models/{name}/versions/{version}/infer", v2_infer),
        ("/v2/models/{name}/explain", v2_explain),
    ):
        methods = ["POST", "PUT"] if path.startswith(("/predictions", "/explanations")) else ["POST"]  # curl -T: PUT
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)


def add_management_routes(app: FastAPI, model: MnistModel, *, workers: int) -> None:
    """TorchServe's management reads, for `mnist-kit models list|describe`; the operations that change what is
    served get 405 and the reason: this runtime serves the archive it was started with."""

    def description(request: Request, name: str, version: str | None = None) -> Response:
        if name != model.name or version not in (None, "all", model.version):
            return reply_response(not_found(model, name))
        entry = {
            "modelName": model.name,
            "modelVersion": model.version,
            "modelUrl": model.archive.path.name,
            "runtime": "kserve",
            "minWorkers": workers,
            "maxWorkers": workers,
            "batchSize": C.BATCH_SIZE,
            "maxBatchDelay": 0,  # the micro-batcher never waits: it batches what arrived during a forward pass
            "workers": [{"id": "answering", "pid": os.getpid(), "status": "READY"}],
        }
        if request.query_params.get("customized") == "true":
            entry["customizedMetadata"] = model.core.describe()
        return Response(json.dumps([entry]), media_type="application/json")

    def listing() -> Response:
        models = [{"modelName": model.name, "modelUrl": model.archive.path.name}]
        return Response(json.dumps({"models": models}), media_type="application/json")

    def refused() -> Response:
        message = (
            "the kserve runtime serves the one archive it was started with: to serve another version or scale it, "
            "start a server with that archive or those --workers, then stop this one"
        )
        return reply_response(error_reply(InputError(message, 405)))

    app.add_api_route("/models", listing, methods=["GET"], include_in_schema=False)
    app.add_api_route("/models", refused, methods=["POST"], include_in_schema=False)
    for path in ("/models/{name}", "/models/{name}/{version}"):
        app.add_api_route(path, description, methods=["GET"], include_in_schema=False)
        app.add_api_route(path, refused, methods=["PUT", "DELETE"], include_in_schema=False)
    app.add_api_route("/models/{name}/{version}/set-default", refused, methods=["PUT"], include_in_schema=False)


async def torchserve_row(request: Request) -> tuple[dict, dict]:
    """A request as TorchServe's worker hands it to a handler: JSON sent as application/json parsed, multipart fields
    by name with their own content types, else the raw body; and the headers."""
    headers = dict(request.headers)
    kind = media_type(headers.get("content-type"))
    if kind == "multipart/form-data":
        form = await request.form()
        row = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                row[key] = await value.read()
                headers[key] = {"content-type": value.content_type or ""}
            else:
                row[key] = value
        return row, headers
    body = await request.body()
    if kind == "application/json":
        try:
            return {"body": json.loads(body)}, headers
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            pass  # as TorchServe: the bytes go on, and the core says what is wrong with them
    return {"body": body}, headers


def not_found(model: MnistModel, which: str) -> Reply:
    return error_reply(InputError(f"model {which} not found: this server serves {model.name}", 404))


def reply_response(reply: Reply) -> Response:
    body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
    return Response(body, status_code=reply.status, media_type="application/json")
