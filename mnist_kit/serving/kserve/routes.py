"""The kserve runtime's REST routes on ModelServer's FastAPI app, added ahead of its own: TorchServe's inference and
explanation paths, KServe v1 and Open Inference Protocol v2 (JSON or binary), health checks that know about a drain,
and TorchServe's management reads. Requests reach the core through the model's micro-batcher, read and answered by
rest.py as the hot path's are. `model` is the runtime's MnistModel (model.py); this module imports no kserve, so the
routes can be tested in any process (KServe's protobufs and tritonclient's cannot share one).
"""

import json
import os

from fastapi import FastAPI, Request, Response

from mnist_kit import constants as C
from mnist_kit.serving.kserve import metrics, rest
from mnist_kit.worker.core import Reply, error_reply
from mnist_kit.worker.request_bodies import media_type
from mnist_kit.worker.request_errors import InputError


def add_routes(app: FastAPI, model) -> None:
    """The REST routes that reach the core as TorchServe's do; added before ModelServer registers its own, so these
    answer first."""

    async def answer(request: Request, name: str, version: str | None = None, *, explain: bool = False) -> Response:
        served = rest.answering(model, name, version)
        if served is None:
            return reply_response(rest.not_found(model, name, version))
        row, headers, sent = await torchserve_row(request)
        try:
            if explain:
                headers["explain"] = "True"  # as TorchServe's frontend marks explanations
                core = served.core
                (reply,) = await served.batcher.run(lambda: core.explain(core.decode([row], [headers])))
            else:
                reply = await served.batcher.submit(row, headers, sent)
        except Exception as e:  # a bug of ours: rest.encode answers it in the kit's form, as the hot path does
            reply = e
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

    async def v2_explain(request: Request, name: str, version: str | None = None):
        return await answer(request, name, version, explain=True)

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
        ("/v2/models/{name}/versions/{version}/explain", v2_explain),
    ):
        methods = ["POST", "PUT"] if path.startswith(("/predictions", "/explanations")) else ["POST"]  # curl -T: PUT
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
    if metrics.multiprocess_dir():  # ahead of ModelServer's, which reads this worker's figures alone

        async def all_workers_metrics(request: Request) -> Response:
            data, content_type = metrics.exposition_of_all_workers(request.headers.get("accept"))
            return Response(data, headers={"content-type": content_type})

        app.add_api_route("/metrics", all_workers_metrics, methods=["GET"], include_in_schema=False)


def add_management_routes(app: FastAPI, model, *, workers: int) -> None:
    """TorchServe's management reads, for `mnist-kit models list|describe`; the operations that change what is
    served get 405 and the reason: this runtime serves the archive it was started with."""

    def version_entry(served, request: Request) -> dict:
        entry = {
            "modelName": model.name,
            "modelVersion": served.version,
            "modelUrl": served.archive.path.name,
            "runtime": "kserve",
            "minWorkers": workers,
            "maxWorkers": workers,
            "batchSize": C.BATCH_SIZE,
            "maxBatchDelay": 0,  # the micro-batcher never waits: it batches what arrived during a forward pass
            "workers": [{"id": "answering", "pid": os.getpid(), "status": "READY"}],
            "isDefault": served.version == model.version,
        }
        if request.query_params.get("customized") == "true":
            entry["customizedMetadata"] = served.core.describe()
        return entry

    def description(request: Request, name: str, version: str | None = None) -> Response:
        """The default version's (no version), one version's, or every version's (`all`), as TorchServe's."""
        if name != model.name or version not in (None, "all", *model.versions):
            return reply_response(rest.not_found(model, name))
        chosen = model.versions.values() if version == "all" else [model.versions[version or model.version]]
        return Response(
            json.dumps([version_entry(served, request) for served in chosen]), media_type="application/json"
        )

    def listing() -> Response:
        """One entry per model, its default version's archive, as TorchServe lists them."""
        models = [{"modelName": model.name, "modelUrl": model.archive.path.name}]
        return Response(json.dumps({"models": models}), media_type="application/json")

    def refused() -> Response:
        served = "the one archive" if len(model.versions) == 1 else f"the archives ({', '.join(model.versions)})"
        message = (
            f"the kserve runtime serves {served} it was started with: to serve another version or scale it, "
            "start a server with that archive or those --workers, then stop this one"
        )
        return reply_response(error_reply(InputError(message, 405)))

    app.add_api_route("/models", listing, methods=["GET"], include_in_schema=False)
    app.add_api_route("/models", refused, methods=["POST"], include_in_schema=False)
    for path in ("/models/{name}", "/models/{name}/{version}"):
        app.add_api_route(path, description, methods=["GET"], include_in_schema=False)
        app.add_api_route(path, refused, methods=["PUT", "DELETE"], include_in_schema=False)
    app.add_api_route("/models/{name}/{version}/set-default", refused, methods=["PUT"], include_in_schema=False)


async def torchserve_row(request: Request) -> tuple[dict, dict, bytes | None]:
    """A request as TorchServe's worker hands it to a handler: multipart fields by name with their own content types
    (Starlette's form parser), else rest.row's body; the headers, as rest.header_dict reads them; and the body's
    bytes as sent (None for a form: a shadow's record takes the picture's field)."""
    headers = rest.header_dict(request.scope["headers"])
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
        return row, headers, None
    body = await request.body()
    return rest.row(body, kind), headers, body


def reply_response(reply: Reply | Exception) -> Response:
    """rest.encode's status, headers and bytes, as the hot path sends them."""
    status, headers, data = rest.encode(reply)
    return Response(data, status_code=status, headers={name.decode(): value.decode() for name, value in headers})
