"""The kserve runtime's hot routes as a plain ASGI app in front of ModelServer's FastAPI app: `/predictions/NAME`
(and `/VERSION`), PUT or POST, and v2 `infer` (JSON or binary), the requests a served model answers by the thousand.

FastAPI's routing, its middleware stack (KServe's per-request timing among it) and a response object per request
cost more CPU than decoding a 28×28 PNG and running it through the network; this path reads the body, hands it to
the micro-batcher and writes the core's reply through the same functions as the FastAPI routes (rest.py: the model
name check, the headers, the JSON fallback, the reply's bytes), with no response object. Anything else, and any
request it leaves to FastAPI (multipart forms, a body without a length or over the size limit, another model's
name, a missing token), goes on to the FastAPI app.
"""

import re

from mnist_kit import constants as C
from mnist_kit.serving.kserve import auth as kserve_auth
from mnist_kit.serving.kserve import rest
from mnist_kit.worker.request_bodies import media_type

ROUTES = re.compile(
    r"^/(?:predictions/(?P<name>[^/]+)(?:/(?P<version>[^/]+))?"
    r"|v2/models/(?P<v2name>[^/]+)(?:/versions/(?P<v2version>[^/]+))?/infer)$"
)


class HotPath:
    """`HotPath(app, model, token=...)`: the ASGI app uvicorn serves; `app` answers whatever this one does not."""

    def __init__(self, app, model, *, token: str | None = None):
        self.app, self.model, self.token = app, model, token

    async def __call__(self, scope, receive, send):
        served = hot_route(scope, self.model)
        if served is None:
            return await self.app(scope, receive, send)
        headers = rest.header_dict(scope["headers"])
        length = headers.get("content-length", "")
        kind = media_type(headers.get("content-type"))
        if (
            not (length.isascii() and length.isdigit())
            or int(length) > C.MAX_REQUEST_BYTES
            or kind == "multipart/form-data"
            or (self.token and not kserve_auth.authorized(headers.get("authorization"), self.token))
        ):
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client went away mid-body: no one to answer
            return
        try:
            reply = await served.batcher.submit(rest.row(body, kind), headers, body)
        except Exception as e:  # a bug of ours: rest.encode answers it in the kit's form
            reply = e
        status, reply_headers, data = rest.encode(reply, served.version)
        await send({"type": "http.response.start", "status": status, "headers": reply_headers})
        await send({"type": "http.response.body", "body": data})


def hot_route(scope, model):
    """The version that answers the request, where it is one of the hot routes for a name and version this model
    serves; else None (the FastAPI routes answer another with the kit's 404)."""
    if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
        return None
    found = ROUTES.match(scope["path"])
    if found is None or (found["v2name"] is not None and scope["method"] != "POST"):
        return None
    name, version = (found["v2name"], found["v2version"]) if found["v2name"] else (found["name"], found["version"])
    return rest.answering(model, name, version)


async def read_body(receive) -> bytes | None:
    """The whole body, or None if the client disconnected first."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
