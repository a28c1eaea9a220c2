"""Token checking for the kserve runtime's production profile, as TorchServe's production profile has it: every
request carries `Authorization: Bearer <key>` (REST header, gRPC metadata), or is refused with 401 /
UNAUTHENTICATED and TorchServe's own message.

Health checks stay open, so that a load balancer or a kubelet can probe without the key; they say only whether the
server answers. The key is $MNIST_KIT_TOKEN when set (a cluster's Secret), else a fresh one written to the key file
in TorchServe's layout, readable by its owner only, where `mnist-kit predict`, `models` and the pads read it: one key
for inference and the read-only management routes, which share the port here.
"""

import hmac
import json
import os
import re
import secrets
from pathlib import Path

from mnist_kit import constants as C

MESSAGE = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
OPEN_PATHS = re.compile(r"^/(|ping|v2/health/(live|ready)|v2/models/[^/]+(/versions/[^/]+)?/ready|v1/models/[^/:]+)$")
OPEN_RPCS = {f"/inference.GRPCInferenceService/{name}" for name in ("ServerLive", "ServerReady", "ModelReady")}


def key(key_file) -> str:
    """The key every request must carry: $MNIST_KIT_TOKEN, else a new one written to key_file (never half-written:
    a temporary file, owner-only, renamed into place)."""
    if os.environ.get(C.TOKEN_ENV):
        return os.environ[C.TOKEN_ENV]
    token = secrets.token_urlsafe(24)
    path = Path(key_file)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({api: {"key": token} for api in ("inference", "management")}, out)
    os.replace(temporary, path)
    return token


def authorized(value: str | bytes | None, token: str) -> bool:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return bool(value) and hmac.compare_digest(value.encode(), f"Bearer {token}".encode())


class RequireToken:
    """ASGI middleware: a request without the key gets 401 before any route sees it (health excepted)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or OPEN_PATHS.match(scope["path"]):
            return await self.app(scope, receive, send)
        if authorized(dict(scope["headers"]).get(b"authorization"), self.token):
            return await self.app(scope, receive, send)
        body = json.dumps({"code": 401, "type": "InvalidKeyException", "message": MESSAGE}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def grpc_interceptor(token: str):
    """A gRPC server interceptor that refuses a call without the key with UNAUTHENTICATED (health excepted)."""
    import grpc

    async def deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)

    denied = grpc.unary_unary_rpc_method_handler(deny)

    class RequireTokenRPC(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            given = dict(details.invocation_metadata or ()).get("authorization")
            if details.method in OPEN_RPCS or authorized(given, token):
                return await continuation(details)
            return denied

    return RequireTokenRPC()
