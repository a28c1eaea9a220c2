"""Request bodies as a server hands them over, read into protocols.Requests: which protocol each speaks (an image, the
kit's JSON, KServe v1 or the Open Inference Protocol v2), its pictures, or the InputError that says what is wrong.
Pixel work is preprocess.py's, v1/v2 documents are protocols.py's. Packed into the .mar beside the handler.
"""

import json

from mnist_kit import constants as C
from mnist_kit.worker import preprocess, protocols
from mnist_kit.worker.preprocess import Picture
from mnist_kit.worker.protocols import PLAIN, V1, V2, Request
from mnist_kit.worker.request_errors import InputError


def content_type(row: dict, headers: dict) -> str:
    """The media type of the part carrying the payload (multipart parts have their own), else the request's; ""
    for none."""
    for name in ("data", "file", "body"):
        if name in row and isinstance(headers.get(name), dict):
            return media_type(headers[name].get("content-type"))
    return media_type(header(headers, "content-type"))


def media_type(value: str | None) -> str:
    """A Content-Type header's media type, lower case, without parameters: "image/png; x=1" → "image/png"."""
    return (value or "").split(";")[0].strip().lower()


def read(row: dict, headers: dict | None = None) -> Request:
    """One request (its body fields, as TorchServe's worker parses them, and its headers) → its Request; what is
    wrong with it (and where, in v1/v2) goes in its error."""
    headers = headers or {}
    kind = content_type(row, headers)
    try:
        body = protocol_body(row, kind, headers)
    except InputError as e:  # only v2's binary extension fails here
        return Request(V2, [], error=e)
    if body is None and form_encoded_json(row, kind):
        error = InputError(
            "a JSON body was sent as application/x-www-form-urlencoded (curl -d without a content type): "
            "add -H 'Content-Type: application/json'",
            415,
            reason="content_type",
        )
        return Request(V2 if any("inputs" in str(k) for k in row) else V1, [], error=error)
    strict = header(headers, C.STRICT_HEADER).lower() in ("1", "true", "yes")
    if body is None:
        try:
            return Request(PLAIN, [read_plain(row, kind)], strict=strict)
        except InputError as e:
            return Request(PLAIN, [], error=e)
    document, binary = body
    protocol = V2 if "inputs" in document else V1
    try:
        explain = headers.get("explain") == "True"  # set by TorchServe's frontend on :explain, /explain
        request = protocols.read_v2(document, binary, explain) if protocol == V2 else protocols.read_v1(document)
    except InputError as e:
        return Request(protocol, [], error=e)
    request.strict = strict
    return request


def header(headers: dict, name: str) -> str:
    """A request header's value whatever the case of its name; "" without it."""
    return next((v for k, v in headers.items() if k.lower() == name.lower() and isinstance(v, str)), "")


def protocol_body(row: dict, kind: str, headers: dict) -> tuple[dict, bytes] | None:
    """The v1/v2 JSON document and any binary tensor data after it, or None for a plain request. TorchServe's
    worker has already parsed JSON sent as application/json; clients that name no content type (tritonclient)
    send bytes."""
    payload = row.get("body", row.get("data"))
    if isinstance(payload, dict):
        return (payload, b"") if {"instances", "inputs"} & payload.keys() else None
    if not isinstance(payload, (bytes, bytearray)) or kind.startswith("image/"):
        return None
    length = header(headers, protocols.BINARY_HEADER) or None
    try:
        split = int(length) if length is not None else len(payload)
    except ValueError:
        raise InputError(f"the Inference-Header-Content-Length header is not a number: {length!r}") from None
    if payload[: min(split, 64)].lstrip()[:1] != b"{":  # the first bytes tell; no copy of a large image body
        return None
    try:
        document = json.loads(bytes(payload[:split]))
    except RecursionError:
        raise InputError(
            "the JSON body is nested deeper than Python's parser goes (a v1 or v2 request nests a few levels)",
            reason="bad_json",
        ) from None
    except ValueError as e:
        if length is None:
            return None  # not JSON after all: the plain path says what it is not
        raise InputError(f"the JSON header of the request is not valid JSON: {e}", reason="bad_json") from None
    if not isinstance(document, dict) or not {"instances", "inputs"} & document.keys():
        return None
    return document, bytes(payload[split:])


def form_encoded_json(row: dict, kind: str) -> bool:
    """A v1/v2 body that curl -d sent as a form: TorchServe splits it into fields named after pieces of the JSON."""
    fields = " ".join(map(str, row))
    return kind == "application/x-www-form-urlencoded" and ('"inputs"' in fields or '"instances"' in fields)


def read_plain(row: dict, kind: str = "") -> Picture:
    """One TorchServe request → its Picture, or InputError naming what is wrong with it.

    Accepted: image bytes (a raw body with any image content type, or a multipart field `data` or `file`),
    JSON {"data": "<base64 image>"}, and JSON 28×28 arrays of pixel values.
    """
    kind = media_type(kind)
    name = next((k for k in ("data", "file", "body") if k in row), None)
    if name in (None, "body") and kind == "application/x-www-form-urlencoded":  # TorchServe splits it, kserve not
        raise InputError(
            "the body was sent as application/x-www-form-urlencoded (curl -d, --data-binary): send the "
            "image with an image content type (curl -T FILE, or -H 'Content-Type: image/png')",
            415,
            reason="content_type",
        )
    if name is None and row:
        raise InputError(
            f"no image in the request (fields: {', '.join(sorted(map(str, row)))}): send it as the body, "
            'or as the multipart field "data" or "file"',
            reason="empty",
        )
    payload = row.get(name) if name else None
    if payload is None or (isinstance(payload, (bytes, bytearray, str, list, dict)) and len(payload) == 0):
        raise InputError("empty request: send an image (PNG, JPEG, BMP, GIF, WebP or TIFF) or JSON", reason="empty")
    if kind == "application/json" or isinstance(payload, (dict, list)):
        return protocols.read_json(payload)
    if kind.startswith("text/") or isinstance(payload, str):
        raise InputError(
            f"unsupported content type {kind or 'text'!r}: send an image/* body or application/json",
            415,
            reason="content_type",
        )
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise InputError(
            f"unsupported content type {kind!r}: send an image/* body or application/json", 415, reason="content_type"
        )
    return preprocess.read_image(bytes(payload))
