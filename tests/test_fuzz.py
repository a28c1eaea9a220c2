"""Bad input against both live runtimes (TorchServe and the kserve runtime): every case gets the same 4xx with the
same JSON message from both, and no worker dies."""

import base64
import http.client
import io
import json
import os
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import pytest
from harness import TorchServe
from PIL import Image
from test_preprocess import png_header

from mnist_kit import constants as C
from mnist_kit.serving import client


def post(url: str, body: bytes, content_type: str | None, path: str = "/predictions/mnist") -> tuple[int, bytes]:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, data


def png(size=(100, 100), color=255) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(field: str, data: bytes, content_type: str = "image/png") -> tuple[bytes, str]:
    boundary = "mnistkitboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def jpeg(digits) -> bytes:
    buffer = io.BytesIO()
    Image.open(digits[5]).resize((300, 300)).save(buffer, "JPEG")
    return buffer.getvalue()


CASES = {
    "random bytes": lambda d, j: (os.urandom(5000), "image/png", 400, "not a decodable image"),
    "zero bytes": lambda d, j: (b"", "image/png", 400, "empty request"),
    "truncated png": lambda d, j: (png((300, 300), 0)[:80], "image/png", 400, "corrupt or truncated"),
    "truncated jpeg": lambda d, j: (j[: len(j) // 3], "image/jpeg", 400, "corrupt or truncated JPEG"),
    "1x1 image": lambda d, j: (png((1, 1)), "image/png", 400, "blank image"),
    "blank image": lambda d, j: (png((200, 100), 180), "image/png", 400, "blank image"),
    "zero-height header": lambda d, j: (png_header(10, 0), "image/png", 400, "not a decodable image"),
    "65535x65535 header": lambda d, j: (png_header(65535, 65535), "image/png", 413, "image too large"),
    "30000x30000 header": lambda d, j: (png_header(30000, 30000), "image/png", 413, "image too large"),
    "huge json": lambda d, j: (json.dumps([[0] * 28] * 20000).encode(), "application/json", 400, "28×28"),
    "deeply nested json": lambda d, j: (b"[" * 200000 + b"]" * 200000, "application/json", 400, "not valid JSON"),
    "deeply nested v2 json": lambda d, j: (b'{"inputs": [' * 5000, "application/json", 400, "nested deeper than"),
    "invalid utf-8 json": lambda d, j: (b'\xff\xfe{"data": 1}', "application/json", 400, "not valid JSON"),
    "json wrong shape": lambda d, j: (b'{"pixels": [1, 2]}', "application/json", 400, 'JSON must be {"data"'),
    "json bad base64": lambda d, j: (b'{"data": "%%%not base64"}', "application/json", 400, "not valid base64"),
    "json base64 of junk": lambda d, j: (
        json.dumps({"data": base64.b64encode(b"junk").decode()}).encode(),
        "application/json",
        400,
        "not a decodable image",
    ),
    "text/plain": lambda d, j: (b"seven", "text/plain", 415, "unsupported content type"),
    "application/xml": lambda d, j: (b"<digit>7</digit>", "application/xml", 415, "unsupported content type"),
    "image as form-urlencoded": lambda d, j: (d, "application/x-www-form-urlencoded", 415, "x-www-form-urlencoded"),
    "multipart without data field": lambda d, j: (*multipart("picture", d), 400, "no image in the request"),
    "ppm image": lambda d, j: (
        b"P5\n2 2\n255\n\x00\x00\x00\x00",
        "image/x-portable-graymap",
        415,
        "unsupported image format",
    ),
}


def refusal(url: str, body: bytes, content_type: str | None) -> tuple[int, str]:
    """(status, message) of a refused request: the kit's error object's message, or the Open Inference Protocol's
    {"error": ...}."""
    status, data = post(url, body, content_type)
    answer = json.loads(data)
    if "error" not in answer:
        assert answer["code"] == status and answer["type"], answer
    return status, answer.get("error", answer.get("message"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_the_same_4xx_and_message_from_both_runtimes(server, kserve_runtime, digits, jpeg, case):
    """The same body (random bytes drawn once) to the shared TorchServe and the shared kserve runtime, which serve
    the same archive."""
    body, content_type, status, message = CASES[case](digits[7].read_bytes(), jpeg)
    torchserve = refusal(server.inference_url, body, content_type)
    kserve = refusal(kserve_runtime.inference_url, body, content_type)
    assert torchserve == kserve
    assert torchserve[0] == status and message in torchserve[1], torchserve


def test_a_body_over_max_request_size_gets_413(server):
    """On a keep-alive connection (http.client's, curl's) the frontend reads the body away and answers 413."""
    status, _ = post(server.inference_url, b"\x89PNG" + os.urandom(C.MAX_REQUEST_BYTES), "image/png")
    assert status == 413


def test_a_body_over_max_request_size_sent_with_connection_close_gets_a_reset(server):
    """urllib always sends `Connection: close`: then the frontend answers 413 and closes at once, and the client,
    still sending, sees the connection reset (every time, at 8 MiB + 1 byte as at 64 MiB, measured)."""
    body = b"\x89PNG" + bytes(9 * 2**20 - 4)
    request = urllib.request.Request(
        f"{server.inference_url}/predictions/mnist", data=body, headers={"Content-Type": "image/png"}
    )
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert isinstance(refused.value.reason, ConnectionResetError)


def test_the_client_names_a_reset_on_a_body_over_max_request_size_for_what_it_is(server):
    with pytest.raises(client.ClientError) as dropped:
        client.predict(b"\x89PNG" + bytes(9 * 2**20 - 4), url=server.inference_url)
    assert dropped.value.detail == (
        "the server closed the connection while receiving a body of 9,437,184 bytes, likely over its "
        "max_request_size (8 MiB in the kit's config.properties)"
    )
    assert "Is it running" not in str(dropped.value) and not dropped.value.server_wide


def test_workers_survive_every_bad_input_and_still_read_digits(server, digits, jpeg):
    before = server.worker_pids()
    for case in CASES.values():
        body, content_type, _, _ = case(digits[7].read_bytes(), jpeg)
        post(server.inference_url, body, content_type)
    assert server.worker_pids() == before
    assert client.predict(digits[7].read_bytes(), url=server.inference_url)["digit"] == 7


def test_multipart_field_data_or_file_is_read(server, digits):
    for field in ("data", "file"):
        status, data = post(server.inference_url, *multipart(field, digits[2].read_bytes()))
        assert status == 200 and json.loads(data)["digit"] == 2


def test_json_base64_and_pixel_array_are_read(server, digits):
    encoded = json.dumps({"data": base64.b64encode(digits[8].read_bytes()).decode()}).encode()
    status, data = post(server.inference_url, encoded, "application/json")
    assert status == 200 and json.loads(data)["digit"] == 8
    pixels = json.dumps(np.asarray(Image.open(digits[4])).tolist()).encode()
    status, data = post(server.inference_url, pixels, "application/json")
    assert status == 200 and json.loads(data)["digit"] == 4


def test_in_a_batch_a_bad_request_fails_alone(server, digits):
    requests = [
        (digits[i % 10].read_bytes(), "image/png") if i % 3 else (os.urandom(300), "image/png") for i in range(60)
    ]
    batches_before = server.count_in_log("Backend received inference")
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda r: post(server.inference_url, *r), requests))
    for i, (status, data) in enumerate(answers):
        if i % 3:
            assert status == 200 and json.loads(data)["digit"] == i % 10
        else:
            assert status == 400 and "not a decodable image" in json.loads(data)["message"]
    assert server.count_in_log("Backend received inference") - batches_before < len(requests)


@pytest.fixture
def own_server(model_store):
    """A server of its own, for a test that kills one of its workers."""
    with TorchServe(model_store) as ts:
        yield ts


def test_a_worker_killed_with_sigkill_is_replaced_and_serving_goes_on(own_server, digits):
    server = own_server
    before = server.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    answer = client.predict(digits[1].read_bytes(), url=server.inference_url, wait=60)
    assert answer["digit"] == 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = json.loads(server.get(f"{server.management_url}/models/mnist"))[0]["workers"]
        if (
            len(workers) == len(before)
            and all(w["status"] == "READY" for w in workers)
            and before[0] not in [w["pid"] for w in workers]
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the killed worker was not replaced: {workers}")
