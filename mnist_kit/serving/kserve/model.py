"""The kit on KServe's ModelServer (`mnist-kit serve --runtime kserve`): a kserve.Model over the same serving core
(worker/core.py) and the same .mar that TorchServe serves, one core per version; its metrics are metrics.py's.

Its REST routes are routes.py's (read and answered through rest.py, as the hot path in front of them does); here,
gRPC v2 (ModelInfer) reaches the model's predict with KServe's InferRequest, turned back into the v2 request the core
reads, answered by the version the request names, else the default; a bad request there is INVALID_ARGUMENT with
the same message as over REST, an unknown version NOT_FOUND.
"""

import json
import struct
import tempfile

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mnist_kit import constants as C
from mnist_kit.serving.kserve import metrics, rest, versions
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.serving.kserve.disagreements import DisagreementWriter, default_path
from mnist_kit.serving.kserve.routing import Routed, seed_routing
from mnist_kit.worker import drift, protocols
from mnist_kit.worker.core import Core


class MnistModel(Model, Routed):
    """The one model a kserve runtime's worker serves, in one or several versions: the archives (`mar.read`: their
    name, version, manifest; the first the default at start), and once loaded each version's serving core over its
    unpacked folder and the micro-batcher that shares its forward passes (`versions`, a versions.Version by version,
    in the order given); the routing (routing.Routed: which version is the default, `version`, and which the
    candidate, a shadow reading the default's batches or a canary answering a share of the requests naming no
    version: `bare()`), changed live; and the drain state (`draining`: readiness 503, everything else answered).

    server.py builds it, calls `load` before binding, registers it with ModelServer (health, metadata, gRPC v2
    reach `predict`) and hands it to routes.py (add_routes, add_management_routes) and HotPath, whose REST
    requests reach a version's `batcher` (rest.answering; its `core` for explanations and descriptions); a stop
    signal calls `drain`, the end of the process `close`.
    """

    def __init__(
        self,
        archives,
        *,
        serving_form: str | None = None,
        shadow=None,
        shadow_share=1.0,
        shadow_store=None,
        routing_file=None,
    ):
        """`archives`: the .mar files of one model's versions, the default first (versions.read refuses others);
        `shadow`: the version that shadows the default for `shadow_share` of requests at start, its disagreements
        (any shadow's) kept in the `shadow_store` file (default: shadow.db in the kit's home); `routing_file`: the
        runtime's routing state, which every worker follows (None: this worker's alone)."""
        self.archives = versions.read(archives)
        versions.check_shadow(self.archives, shadow, shadow_share)
        super().__init__(self.archives[0].model_name)
        self.archive, self.version = self.archives[0], self.archives[0].version  # the default, until the routing's
        self.serving_form = serving_form
        self.shadow, self.shadow_share, self.shadow_store = shadow, shadow_share, shadow_store
        self.routing_file = routing_file
        self.versions: dict[str, versions.Version] = {}
        self.writer = None
        self.draining = False  # going away: readiness says 503, everything else is answered as usual

    def drain(self) -> None:
        self.draining = True

    def load(self) -> bool:
        """Unpack each archive as TorchServe would and load it into a core of its own: the same serving form chosen
        the same way (timed on this CPU unless forced), and the drift window over its baseline where it has one;
        then the routing, the command line's or the runtime's."""
        # Removed when the process ends (the objects' finalizers), as TorchServe removes a worker's model_dir.
        self.unpacked = [tempfile.TemporaryDirectory(prefix="mnist-kit-kserve-") for _ in self.archives]
        for archive, folder in zip(self.archives, self.unpacked):
            core = self.load_core(archive, folder.name)
            baseline = drift.Baseline.load(folder.name)  # none in an archive built before it: no drift figures
            drifting = metrics.Drifting(archive.version, baseline) if baseline is not None else None
            counted = metrics.Counted(archive.version)
            batcher = MicroBatcher(core, on_batch=metrics.batched, counted=counted, drift=drifting)
            self.versions[archive.version] = versions.Version(archive, core, batcher)
        self.start_routing(seed_routing(self.version, self.shadow, self.shadow_share), path=self.routing_file)
        self.ready = True
        return self.ready

    def shadow_writer(self) -> DisagreementWriter:
        """The writer of every shadow's disagreements, started with the first shadow."""
        if self.writer is None:
            self.writer = DisagreementWriter(self.shadow_store or default_path())
        return self.writer

    def load_core(self, archive, folder: str) -> Core:
        unpacked = archive.extract(folder)
        forced = self.serving_form or (archive.config.get("handler") or {}).get("serving_form")
        # Torch-free where the archive has an ONNX form that loads: PyTorch only for its eager forms where none does.
        return Core(str(unpacked), archive.model, serving_form=forced, publish=metrics.publish, with_torch=False)

    def close(self) -> None:
        """At the end of the process: the shadow's disagreements still queued are written."""
        if self.writer is not None:
            self.writer.close()

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
        served = rest.answering(self, self.name, payload.model_version or None)
        if served is None:
            error = ModelNotFound()
            error.reason = rest.not_found(self, self.name, payload.model_version).body["message"]
            raise error
        row, row_headers = v2_row(payload)
        reply = await served.batcher.submit(row, {**(headers or {}), **row_headers})
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
