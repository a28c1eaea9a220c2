"""The client for a running TorchServe: sends images with an image content type, and the token when auth is on.

TorchServe answers a body sent as application/x-www-form-urlencoded (curl --data-binary, urllib's default)
with a 500, so every request here names its content type. HTTPS servers are verified against the system's
certificate authorities, or the one in `cacert` (a self-signed certificate, a private CA).
"""

import http.client
import json
import random
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError

RETRYABLE = (None, 502, 503, 504, 507)  # None: no answer at all (refused, reset, closed)


class ClientError(KitError):
    """The server could not be reached (status None) or answered with an error status; the message says which.

    `server_wide` says the failure is the server's or the connection's, not this request's (not running, no TLS
    this client trusts, a token or a scheme it refuses): a caller with more requests for it stops there, since
    each would fail the same way.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        detail: str | None = None,
        *,
        retryable: bool | None = None,
        server_wide: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self._retryable = retryable
        self.detail = detail or message  # the server's own message, without the URL and hints around it
        self.server_wide = server_wide

    @property
    def retryable(self) -> bool:
        """Worth another try: the server is not up yet or going away (no connection, a reset), has no free worker
        (503), lost the worker mid-request (507), or a proxy lost the replica behind it (502, 504); never a
        certificate or TLS failure, never bad input."""
        return self.status in RETRYABLE if self._retryable is None else self._retryable


def content_type(data: bytes) -> str:
    """The image content type an image file is sent with, told from its first bytes (C.IMAGE_FORMATS)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for kind, signatures in C.IMAGE_FORMATS.values():
        if data.startswith(signatures):
            return kind
    return "application/octet-stream"


def read_token(key_file=C.KEY_FILE, api: str = "inference") -> str | None:
    """The token TorchServe wrote to key_file.json (in the directory it was started from), or None without one."""
    path = Path(key_file)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())[api]["key"]
    except (ValueError, KeyError, TypeError):
        raise ClientError(f'{path} is not a TorchServe key file (expected {{"{api}": {{"key": ...}}}})') from None


def request(
    url: str,
    data: bytes | None = None,
    method: str | None = None,
    *,
    headers: dict | None = None,
    token: str | None = None,
    timeout: float = 30,
    cacert=None,
    response_headers: dict | None = None,
) -> bytes:
    """One HTTP(S) request; errors become ClientError with TorchServe's own message. `response_headers`, when given,
    receives the answer's headers."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls_context(cacert)) as response:
            if response_headers is not None:
                response_headers.update(response.headers)
            return response.read()
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        message = message.strip() or e.reason  # TorchServe's frontend answers some statuses (413) with no body
        hint = ""  # the server-wide failures: every request would get the same answer
        if "token" in message.lower() or "InvalidKey" in body:
            hint = (
                f" (token authorization is on: pass --token, or set {C.HOME_ENV} to the folder TorchServe was "
                "started in)"
            )
        elif "only accepts HTTPS" in message:
            hint = " (it serves HTTPS: use an https:// URL, with --cacert when its certificate is self-signed)"
        raise ClientError(
            f"{url}: HTTP {e.code}: {message}{hint}", e.code, detail=message, server_wide=bool(hint)
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ClientError(
                f"{url}: the server's certificate is not trusted ({reason.verify_message}): pass --cacert with the "
                "certificate (or CA) it was signed with",
                retryable=False,
                server_wide=True,
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise ClientError(
                f"{url}: TLS handshake failed ({reason.reason or reason}): is the server serving HTTPS on this port? "
                "(its inference_address starts with https:// only when it has certificate_file and private_key_file)",
                retryable=False,
                server_wide=True,
            ) from None
        if isinstance(reason, (ConnectionResetError, BrokenPipeError)) and len(data or b"") > C.MAX_REQUEST_BYTES:
            detail = closed_on_large_body(len(data))
            raise ClientError(f"{url}: {detail}", detail=detail, retryable=False) from None
        raise ClientError(
            f"cannot reach TorchServe at {url}: {reason}. Is it running? (start it with `mnist-kit serve`)",
            server_wide=True,
        ) from None
    except http.client.IncompleteRead as e:  # the server went away while it answered (killed): as a reset, retried
        raise ClientError(
            f"{url}: the connection closed in the middle of the answer ({len(e.partial)} bytes of it read)",
            server_wide=True,
        ) from None
    except http.client.HTTPException as e:  # something listens, but it does not speak HTTP/1.1
        raise ClientError(
            f"{url}: the server there does not answer HTTP/1.1 ({type(e).__name__}): a gRPC port? (the kserve "
            f"runtime's gRPC v2 is on {C.KSERVE_GRPC_PORT}, its REST API, management reads included, on "
            f"{C.INFERENCE_PORT})",
            retryable=False,
            server_wide=True,
        ) from None


def closed_on_large_body(size: int) -> str:
    """Why a server that is up drops a large upload: TorchServe's frontend answers a body over max_request_size with
    413 and closes the connection at once when the request says `Connection: close` (urllib's always do), so the
    client, still sending, sees a reset instead of the 413."""
    return (
        f"the server closed the connection while receiving a body of {size:,} bytes, likely over its "
        f"max_request_size ({mib(C.MAX_REQUEST_BYTES)} MiB in the kit's config.properties)"
    )


def mib(size: int) -> str:
    """Bytes in MiB, as people write them: 8, 9.5."""
    return f"{size / 2**20:.1f}".removesuffix(".0")


def refuse_oversized(name, size: int, limit: int, *, source: str) -> None:
    """Say, without sending it, that a body is over the server's max_request_size: TorchServe would drop it."""
    if size > limit:
        detail = (
            f"not sent: {mib(size)} MiB ({size:,} bytes) is over the server's max_request_size of {mib(limit)} MiB "
            f"({source})"
        )
        raise ClientError(f"{name} {detail}", detail=detail, retryable=False)


def tls_context(cacert=None) -> ssl.SSLContext | None:
    """The system's trust store, or only `cacert` (PEM) when given; a file that is no certificate is a ClientError."""
    if cacert is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"{cacert} is not a readable PEM certificate: {e}") from None


def predict(
    data: bytes,
    url: str = C.INFERENCE_URL,
    model: str = C.MODEL_NAME,
    *,
    token: str | None = None,
    timeout: float = 30,
    retries: int = 3,
    wait: float = 0,
    cacert=None,
    strict: bool = False,
    on_retry=None,
    response_headers: dict | None = None,
) -> dict:
    """Send one image; returns the handler's {"digit", "confidence", "flags", "probabilities"} (and "digits" for
    several digits that each read confidently). `strict` sends C.STRICT_HEADER: a picture that is no digit is then
    a ClientError with status 422, not an answer flagged not_a_digit.

    A prediction is idempotent, so what a server going away or restarting causes is sent again: connection errors
    and resets, 502 and 504 (a proxy lost its replica), 503 (starting, queue full) and 507 (worker died
    mid-request), never a 4xx. Up to `retries` times,
    or for up to `wait` seconds when that is longer, after a jittered exponential backoff (0.1 s doubling to 2 s,
    each delay drawn from its upper half so that clients cut off together do not come back together).
    `on_retry(attempt, error, delay)` hears of each retry (`predict --verbose` prints them); `response_headers`
    receives the answer's headers (a proxy's X-Served-By).
    """
    deadline = time.monotonic() + wait
    delay, attempt = 0.1, 0
    headers = {C.STRICT_HEADER: "true"} if strict else {}
    while True:
        try:
            return post_image(
                f"{url.rstrip('/')}/predictions/{model}",
                data,
                token=token,
                timeout=timeout,
                cacert=cacert,
                headers=headers,
                response_headers=response_headers,
            )
        except ClientError as e:
            attempt += 1
            pause = delay * random.uniform(0.5, 1.0)
            if not e.retryable or (attempt > retries and time.monotonic() + pause > deadline):
                raise
            if on_retry:
                on_retry(attempt, e, pause)
        time.sleep(pause)
        delay = min(delay * 2, 2.0)


def explain(
    data: bytes, url: str = C.INFERENCE_URL, model: str = C.MODEL_NAME, *, token: str | None = None, timeout: float = 60
) -> dict:
    """Integrated Gradients of the predicted digit: {"digit", "pixels": 28×28, "attributions": 28×28}."""
    return post_image(f"{url.rstrip('/')}/explanations/{model}", data, token=token, timeout=timeout)


def post_image(
    url: str, data: bytes, *, token: str | None, timeout: float, cacert=None, headers=None, response_headers=None
) -> dict:
    """POST an image with its own content type (TorchServe answers form-urlencoded bodies with a 500)."""
    headers = {"Content-Type": content_type(data), **(headers or {})}
    body = request(
        url,
        data=data,
        method="POST",
        headers=headers,
        token=token,
        timeout=timeout,
        cacert=cacert,
        response_headers=response_headers,
    )
    return json.loads(body)


def described(
    management_url: str = C.MANAGEMENT_URL, model: str = C.MODEL_NAME, token: str | None = None, *, timeout: float = 10
) -> tuple[dict, dict]:
    """The default version's description (GET /models/MODEL?customized=true) and what its handler's describe
    answered there: the kit's handler names its serving form; other handlers leave it empty."""
    description = json.loads(
        request(f"{management_url.rstrip('/')}/models/{model}?customized=true", token=token, timeout=timeout)
    )[0]
    custom = description.get("customizedMetadata")  # TorchServe hands the handler's JSON on parsed, text otherwise
    return description, custom if isinstance(custom, dict) else {}


def ping(url: str = C.INFERENCE_URL, token: str | None = None, timeout: float = 5) -> dict:
    return json.loads(request(f"{url.rstrip('/')}/ping", token=token, timeout=timeout))
