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
from mnist_kit.serving.kserve import metrics, rest, routing
from mnist_kit.worker.core import Reply, error_reply
from mnist_kit.worker.request_bodies import media_type
from mnist_kit.worker.request_errors import InputError

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
NOT_LOCAL = (
    "the routing is changed from this machine only, or with the production profile's token "
    "(mnist-kit serve --runtime kserve --profile production)"
)


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
        return reply_response(reply, served.version)

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

    async def all_workers_metrics(request: Request) -> Response:
        """Ahead of ModelServer's /metrics, which reads this worker's figures alone, batch histograms as counters."""
        data, content_type = metrics.exposition_of_all_workers(request.headers.get("accept"))
        return Response(data, headers={"content-type": content_type})

    app.add_api_route("/metrics", all_workers_metrics, methods=["GET"], include_in_schema=False)


def add_management_routes(app: FastAPI, model, *, workers: int, token_checked: bool = False) -> None:
    """TorchServe's management reads, for `mnist-kit models list|describe`, and the routing's writes (set-default,
    a candidate: add_routing_routes); the operations that change which archives are served get 405 and the reason:
    this runtime serves the archives it was started with."""

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
        state = model.routes.state
        if served.version == state.candidate:
            entry["candidate"] = {"mode": state.mode, "share": state.share}
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
    add_routing_routes(app, model, token_checked=token_checked)


def add_routing_routes(app: FastAPI, model, *, token_checked: bool) -> None:
    """The routing changed live (routing.py), for a canary's stages: `PUT /models/NAME/VERSION/set-default` as
    TorchServe's; `PUT /models/NAME/VERSION/candidate?mode=shadow|canary&share=F` and `DELETE` of it. Each answers
    once this worker applies the change; open from this machine only, unless every request carries the production
    profile's token (`token_checked`: the middleware checked it before). They run on the event loop's thread (async),
    as the batches do: a change applies between two batches."""

    def refused_here(request: Request) -> Response | None:
        client = request.client
        if not token_checked and client is not None and client.host not in LOOPBACK:
            return reply_response(error_reply(InputError(NOT_LOCAL, 403)))
        return None

    async def change(request: Request, name: str, *, update, said) -> Response:
        if refused := refused_here(request):
            return refused
        if name != model.name:
            return reply_response(rest.not_found(model, name))
        try:
            state = model.routes.change(update)
        except routing.RoutingError as e:
            return reply_response(error_reply(InputError(str(e), e.status)))
        return Response(json.dumps({"status": said(state), **state.as_dict()}), media_type="application/json")

    async def set_default(request: Request, name: str, version: str) -> Response:
        said = f'Default version successfully updated for model "{name}" to "{version}"'
        return await change(request, name, update=lambda state: state.promoted(version), said=lambda state: said)

    async def set_candidate(request: Request, name: str, version: str) -> Response:
        if refused := refused_here(request):
            return refused
        query = request.query_params
        unknown = sorted(set(query) - {"mode", "share"})
        if unknown:
            message = f"unknown parameter {', '.join(unknown)}: give mode (shadow or canary) and share (in (0, 1])"
            return reply_response(error_reply(InputError(message)))
        mode = query.get("mode", "shadow")
        try:
            share = routing.share_of(query.get("share"))
        except routing.RoutingError as e:
            return reply_response(error_reply(InputError(str(e), e.status)))
        if share is None and mode == "canary":
            return reply_response(error_reply(InputError("a canary needs its share: give share=F, in (0, 1]")))

        def update(state):
            return routing.Routing(state.default, version, mode, 1.0 if share is None else share)

        def said(state):
            return f"version {version} is the candidate, as a {mode} for {state.share:g} of the requests"

        return await change(request, name, update=update, said=said)

    async def remove_candidate(request: Request, name: str, version: str) -> Response:
        def update(state):
            routing.check_served(version, list(model.versions))
            return routing.Routing(state.default) if state.candidate == version else state

        return await change(request, name, update=update, said=lambda state: f"version {version} is no candidate")

    app.add_api_route("/models/{name}/{version}/set-default", set_default, methods=["PUT"], include_in_schema=False)
    app.add_api_route("/models/{name}/{version}/candidate", set_candidate, methods=["PUT"], include_in_schema=False)
    path = "/models/{name}/{version}/candidate"
    app.add_api_route(path, remove_candidate, methods=["DELETE"], include_in_schema=False)


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


def reply_response(reply: Reply | Exception, version: str | None = None) -> Response:
    """rest.encode's status, headers and bytes, as the hot path sends them."""
    status, headers, data = rest.encode(reply, version)
    return Response(data, status_code=status, headers={name.decode(): value.decode() for name, value in headers})
