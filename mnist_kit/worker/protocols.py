"""KServe v1 and Open Inference Protocol (v2) bodies, read and written by the handler itself, per request.

TorchServe's frontend routes `/v1/models/{name}:predict|:explain` and `/v2/models/{name}/infer|explain` to the
model like `/predictions`, adding only an `explain` header, and leaves the body to the worker. Its own `kserve`
and `kservev2` envelopes (chosen by `service_envelope`, or $TS_SERVICE_ENVELOPE with enable_envvars_config=true,
as KServe's runtime sets it) read only the first request of a batch, and kservev2 only the first element of a
BYTES input, so with batching on they fail concurrent requests ("number of batch response mismatched",
pytorch/serve#2158, unfixed in 0.12, the last release). So the handler recognises each request's protocol from
its body (request_bodies.py), `{"instances": ...}` (v1) or `{"inputs": ...}` (v2), decodes every image of it here, and
writes each answer in its request's protocol: requests of all three kinds share one batched forward pass, and an
envelope, if one is configured, is made a pass-through (mnist_handler.py). Packed into the .mar beside the handler.
"""

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from mnist_kit import constants as C
from mnist_kit.worker import preprocess
from mnist_kit.worker.answers import Answer
from mnist_kit.worker.preprocess import Picture
from mnist_kit.worker.request_errors import InputError

PLAIN, V1, V2 = "plain", "v1", "v2"
# The Triton binary tensor extension (tritonclient's default): the JSON header is the body's first N bytes.
BINARY_HEADER = "inference-header-content-length"
# The Open Inference Protocol datatypes an image batch may come in, and the value range of the numeric ones.
TENSOR_RANGES = {"FP32": 1.0, "UINT8": 255.0}
SHAPES = "[28, 28], [1, 28, 28], [N, 28, 28] or [N, 1, 28, 28]"


@dataclass
class Request:
    """One request's pictures (preprocess.Picture each) and how to answer it: its protocol, v2 `id` and wanted
    outputs, and whether it is strict (C.STRICT_HEADER: a picture that is no digit fails it); or, for a request that
    cannot be read, the InputError that says why."""

    protocol: str
    images: list
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    error: InputError | None = None
    strict: bool = False


def read_json(payload) -> Picture:
    """The kit's JSON for one image (and a v1 instance): {"data": "<base64 image>"}, or a 28×28 array of pixels."""
    if isinstance(payload, (bytes, bytearray)):
        raise InputError("the body is not valid JSON", reason="bad_json")
    if isinstance(payload, dict):
        if "data" not in payload:
            raise InputError(
                'JSON must be {"data": "<base64 image>"} or a 28×28 array of pixel values', reason="bad_json"
            )
        payload = payload["data"]
        if isinstance(payload, str):
            try:
                data = base64.b64decode(payload, validate=True)
            except ValueError as e:
                raise InputError(f'"data" is not valid base64: {e}', reason="bad_json") from None
            return preprocess.read_image(data)
    if isinstance(payload, list):
        return preprocess.read_array(payload)
    raise InputError('JSON must be {"data": "<base64 image>"} or a 28×28 array of pixel values', reason="bad_json")


def read_v1(document: dict) -> Request:
    """KServe v1: {"instances": [{"data": "<base64 image>"} or a 28×28 array of pixel values, ...]}."""
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise InputError('"instances" must be a non-empty list of {"data": "<base64 image>"}', reason="bad_json")
    check_count(len(instances), "instances")
    images = []
    for i, instance in enumerate(instances):
        try:
            images.append(read_json(instance))
        except InputError as e:
            raise InputError(f"instance {i}: {e}", e.status, e.reason) from None
    return Request(V1, images)


def read_v2(document: dict, binary: bytes = b"", explain: bool = False) -> Request:
    """Open Inference Protocol: one input, BYTES (base64 image files) of shape [N], or an FP32 (0..1) or UINT8
    (0..255) tensor of shape [28, 28], [N, 28, 28] or [N, 1, 28, 28]; data nested, flat, or binary after the
    JSON (Triton's extension, where BYTES elements are the image files themselves)."""
    inputs = document["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else "no list"
        raise InputError(
            f'"inputs" must hold exactly one input, the images (got {count}): BYTES of base64 image files, '
            "or an FP32 (0..1) or UINT8 (0..255) tensor",
            reason="bad_json",
        )
    tensor = inputs[0]
    where = f"input {tensor.get('name', '')!r}"
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f'"id" must be a string, got {json.dumps(request_id)}', reason="bad_json")
    outputs = requested_outputs(document.get("outputs"), C.V2_EXPLAIN_OUTPUTS if explain else C.V2_OUTPUTS)
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InputError(f"{where}: shape must be a list of integers, got {json.dumps(shape)}", reason="bad_json")
    binary_size = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary_size is not None and binary_size != len(binary) or binary_size is None and binary:
        raise InputError(f"{where}: binary_data_size {binary_size} does not match the {len(binary)} bytes sent")
    if datatype == "BYTES":
        images = bytes_images(where, shape, tensor.get("data"), binary=binary if binary_size is not None else None)
    elif datatype in TENSOR_RANGES:
        if binary_size is not None:
            dtype = np.dtype("<f4") if datatype == "FP32" else np.dtype(np.uint8)
            if binary_size % dtype.itemsize:
                raise InputError(f"{where}: {binary_size} bytes are not a whole number of {datatype} values")
            values = np.frombuffer(binary, dtype=dtype)
        else:
            values = tensor.get("data")
        images = tensor_images(where, datatype, shape, data=values)
    else:
        raise InputError(
            f"{where}: datatype {json.dumps(datatype)} is not supported: send BYTES (base64 image files), "
            "FP32 (pixels 0..1) or UINT8 (pixels 0..255)",
            reason="bad_json",
        )
    return Request(V2, images, request_id, outputs)


def requested_outputs(outputs, known: tuple[str, ...] = C.V2_OUTPUTS) -> tuple[str, ...] | None:
    """The v2 outputs a request names, each one this model has; None (all of them) when it names none."""
    if outputs is None:
        return None
    names = [o.get("name") if isinstance(o, dict) else None for o in outputs] if isinstance(outputs, list) else [None]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(
            f"output {json.dumps(unknown[0])} is not one of this model's: {', '.join(known)}",
            reason="bad_json",
        )
    return tuple(names)


def bytes_images(where: str, shape: list, data, *, binary: bytes | None) -> list:
    """BYTES: each element one image file, base64 in JSON, raw in binary data."""
    if len(shape) != 1:
        raise InputError(f"{where}: BYTES shape must be [N] (one image file per element), got {shape}")
    if binary is not None:
        elements = split_binary_bytes(where, binary)
    elif isinstance(data, list) and all(isinstance(e, str) for e in data):
        elements = data
    else:
        raise InputError(f"{where}: BYTES data must be a list of base64 strings, one image file each")
    if shape[0] not in (-1, len(elements)) or not elements:
        raise InputError(f"{where}: shape {shape} does not match its {len(elements)} elements")
    check_count(len(elements), f"{where} elements")
    images = []
    for i, element in enumerate(elements):
        if isinstance(element, str):
            try:
                element = base64.b64decode(element, validate=True)
            except (binascii.Error, ValueError) as e:
                raise InputError(f"{where}: element {i} is not valid base64: {e}", reason="bad_json") from None
        try:
            images.append(preprocess.read_image(element))
        except InputError as e:
            raise InputError(f"{where}: element {i}: {e}", e.status, e.reason) from None
    return images


def split_binary_bytes(where: str, binary: bytes) -> list[bytes]:
    """Triton's binary BYTES: each element a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise InputError(f"{where}: binary BYTES data ends inside an element's length")
        size = int.from_bytes(binary[offset : offset + 4], "little")
        if offset + 4 + size > len(binary):
            raise InputError(f"{where}: binary BYTES element {len(elements)} is cut short")
        elements.append(binary[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return elements


def tensor_images(where: str, datatype: str, shape: list, *, data) -> list:
    """FP32 0..1 or UINT8 0..255 pixels (ink light on dark, MNIST's way, or the other way round) → 28×28 images,
    used as they are when already in MNIST's format, else cropped and centred like any picture."""
    side = C.IMAGE_SIZE
    if not (
        len(shape) in (2, 3, 4)
        and shape[-2:] == [side, side]
        and (len(shape) != 4 or shape[1] == 1)
        and (len(shape) == 2 or shape[0] >= 1 or shape[0] == -1)
    ):
        raise InputError(f"{where}: shape {shape} is not a batch of 28×28 images: send {SHAPES}")
    try:
        values = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}: {datatype} data must be numbers (nested or flat)") from None
    count = 1 if len(shape) == 2 else shape[0]
    if count == -1 and values.size % (side * side) == 0:
        count = values.size // (side * side)
    if values.size != count * side * side or count == 0:
        raise InputError(
            f"{where}: shape {shape} needs {count * side * side if count > 0 else 'N × 784'} values, got {values.size}"
        )
    check_count(count, f"{where} images")
    top = TENSOR_RANGES[datatype]
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > top:
        hint = ": scale by 1/255, or send UINT8" if datatype == "FP32" else ""
        raise InputError(f"{where}: {datatype} values must be 0..{top:g}{hint}")
    if datatype == "UINT8" and (values != np.round(values)).any():
        raise InputError(f"{where}: UINT8 values must be whole numbers 0..255")
    pixels = np.rint(values.reshape(count, side, side) * (255.0 / top))
    images = []
    for i, image in enumerate(pixels):
        try:
            images.append(preprocess.read_array(image))
        except InputError as e:
            raise InputError(f"{where}: image {i}: {e}", e.status, e.reason) from None
    return images


def check_count(count: int, what: str) -> None:
    if count > C.MAX_IMAGES_PER_REQUEST:
        raise InputError(
            f"{count} {what} in one request: at most {C.MAX_IMAGES_PER_REQUEST}, send the rest in other requests",
            413,
            reason="too_large",
        )


def answer_json(answer: Answer) -> str:
    """The kit's answer to one image, written here: TorchServe would pretty-print a dict at several times the
    cost. Probabilities come rounded to 6 decimals in float64, so each prints in its shortest form."""
    digits = f', "digits": {json.dumps(answer.digits)}' if answer.digits else ""
    return (
        f'{{"digit": {answer.digit}, "confidence": {answer.confidence!r}, "flags": {json.dumps(answer.flags)}'
        f'{digits}, "probabilities": [{", ".join(map(repr, answer.probabilities))}]}}'
    )


def answer(request: Request, answers: list[Answer], model_name: str, *, model_version: str) -> str:
    """A request's answer in its protocol: the kit's JSON, {"predictions": [...]}, or a v2 inference response,
    whose `flags` output holds each image's flags comma-separated ("" for none)."""
    if request.protocol == PLAIN:
        return answer_json(answers[0])
    if request.protocol == V1:
        return f'{{"predictions": [{", ".join(answer_json(a) for a in answers)}]}}'
    table = np.array([a.probabilities for a in answers])
    outputs = {
        "predict": tensor("predict", "INT64", table.argmax(1)),
        "probabilities": tensor("probabilities", "FP32", table),
        "flags": tensor("flags", "BYTES", np.array([",".join(a.flags) for a in answers], dtype=object)),
    }
    return v2_response(request, outputs, model_name, model_version=model_version)


def explanation(request: Request, explained: list[dict], model_name: str, *, model_version: str) -> str:
    """Attributions in a request's protocol; each of `explained` is {"digit", "pixels", "attributions"}."""
    if request.protocol == PLAIN:
        return json.dumps(explained[0])
    if request.protocol == V1:
        return json.dumps({"explanations": explained})
    outputs = {
        "predict": tensor("predict", "INT64", np.array([e["digit"] for e in explained])),
        "attributions": tensor("attributions", "FP32", np.array([e["attributions"] for e in explained])),
        "pixels": tensor("pixels", "UINT8", np.array([e["pixels"] for e in explained])),
    }
    return v2_response(request, outputs, model_name, model_version=model_version)


def tensor(name: str, datatype: str, values: np.ndarray) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": values.flatten().tolist()}


def v2_response(request: Request, outputs: dict, model_name: str, *, model_version: str) -> str:
    wanted = [outputs[n] for n in request.outputs if n in outputs] if request.outputs else list(outputs.values())
    head = {"id": request.id} if request.id is not None else {}
    return json.dumps({**head, "model_name": model_name, "model_version": model_version, "outputs": wanted})


def error_body(protocol: str, status: int, message: str, *, error_type: str) -> dict:
    """The kit's error object for plain requests; {"error": message}, as both protocols define it, for v1/v2."""
    if protocol == PLAIN:
        return {"code": status, "type": error_type, "message": message}
    return {"error": message}
