"""The REST protocol of the kserve runtime, read once: a request → the core's row and headers, a Reply → status,
headers and bytes.

Both ways a REST request is served call these functions, so that they answer alike: the FastAPI routes (routes.py's
add_routes) and the hot path in front of them (hot_path.py). Nothing here allocates more than an answer needs: the
hot path calls it for every prediction.
"""

import json

from mnist_kit.worker.core import Reply, error_reply
from mnist_kit.worker.request_errors import InputError

JSON_TYPE = (b"content-type", b"application/json")
VERSION_HEADER = b"x-model-version"  # the version that answered a prediction or explanation


def answering(model, name: str, version: str | None):
    """The version of `model` that answers for that name and version (no version: `model.bare()`, the default or,
    for a canary's share, the candidate; a version: `model.named(version)`, which no shadow reads), or None."""
    if name != model.name:
        return None
    return model.bare() if version is None else model.named(version)


def not_found(model, name: str, version: str | None = None) -> Reply:
    which = f"{name}/{version}" if version else name
    return error_reply(InputError(f"model {which} not found: this server serves {model.name}", 404))


def header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI's header pairs → a dict by lower-case name. Of a header sent twice, the first counts, as Starlette's
    request.headers reads it (reversed: the first pair is written last)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in reversed(raw)}


def row(body: bytes, kind: str | None) -> dict:
    """A body as TorchServe's worker hands it to a handler: parsed where it was sent as application/json and is
    JSON, else the bytes."""
    if kind == "application/json":
        try:
            return {"body": json.loads(body)}
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            pass  # as TorchServe: the bytes go on, and the core says what is wrong with them
    return {"body": body}


def encode(reply: Reply | Exception, version: str | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A Reply, or the exception raised while answering (a bug of ours: the kit's 500, and the worker goes on) →
    status, headers and body bytes; with the `version` that answered, its X-Model-Version header (the kit's JSON and
    v1 carry no version of their own)."""
    if isinstance(reply, Exception):
        reply = error_reply(InputError(f"internal error: {type(reply).__name__}: {reply}", 500, reason="internal"))
    data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
    headers = [JSON_TYPE, (b"content-length", str(len(data)).encode())]
    if version is not None:
        headers.append((VERSION_HEADER, version.encode()))
    return reply.status, headers, data
