"""The kserve runtime's hot path (serving/kserve_hot_path.py): the hot routes reach the batcher straight, and every
request it would answer differently goes on to ModelServer's FastAPI app, which answers it as before."""

import asyncio
import json

import pytest

from mnist_kit import constants as C
from mnist_kit.serving.kserve.hot_path import HotPath
from mnist_kit.worker.core import Reply


class Model:
    name, version = "mnist", "1.0"

    def __init__(self):
        self.submitted = []

        class Batcher:
            async def submit(batcher, row, headers):
                self.submitted.append((row, headers))
                return Reply('{"digit": 7}')

        self.batcher = Batcher()


def call(path, *, method="PUT", headers=(), body=b"png", token=None):
    """(who answered, status, body) for one request through HotPath in front of a stand-in FastAPI app."""
    model, answered = Model(), []

    async def app(scope, receive, send):
        answered.append("fastapi")
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in (("content-length", str(len(body))), *headers)],
    }
    asyncio.run(HotPath(app, model, token=token)(scope, receive, send))
    who = answered[0] if answered else ("batcher" if model.submitted else "nobody")
    return who, sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), model.submitted


@pytest.mark.unit
@pytest.mark.parametrize("path", ["/predictions/mnist", "/predictions/mnist/1.0", "/v2/models/mnist/infer"])
def test_the_hot_routes_reach_the_batcher_and_answer_its_reply(path):
    who, status, body, submitted = call(path, method="POST", headers=[("content-type", "image/png")])
    assert (who, status, json.loads(body)) == ("batcher", 200, {"digit": 7})
    assert submitted[0][0] == {"body": b"png"} and submitted[0][1]["content-type"] == "image/png"


@pytest.mark.unit
def test_a_json_body_reaches_the_core_parsed_as_torchserve_hands_it_over():
    _, _, _, submitted = call("/predictions/mnist", headers=[("content-type", "application/json")], body=b'{"a": 1}')
    assert submitted[0][0] == {"body": {"a": 1}}


@pytest.mark.unit
@pytest.mark.parametrize(
    "path, method, headers",
    [
        ("/predictions/digits", "PUT", []),  # another model: FastAPI's route answers the kit's 404
        ("/predictions/mnist/2.0", "PUT", []),  # another version
        ("/v2/models/mnist/infer", "PUT", []),  # v2 is POST only
        ("/explanations/mnist", "POST", []),
        ("/predictions/mnist", "GET", []),
        ("/predictions/mnist", "PUT", [("content-type", "multipart/form-data; boundary=x")]),
    ],
)
def test_every_other_request_goes_on_to_the_fastapi_app(path, method, headers):
    assert call(path, method=method, headers=headers)[0] == "fastapi"


@pytest.mark.unit
def test_a_body_without_a_plain_length_or_over_the_limit_goes_on_to_the_fastapi_app():
    too_large = [("content-length", str(C.MAX_REQUEST_BYTES + 1))]
    assert call("/predictions/mnist", headers=too_large)[0] == "fastapi"
    assert call("/predictions/mnist", headers=[("content-length", "\u00b2")])[0] == "fastapi"


@pytest.mark.unit
def test_with_a_token_only_requests_carrying_it_take_the_hot_path():
    assert call("/predictions/mnist", token="k")[0] == "fastapi"  # FastAPI's middleware answers 401
    assert call("/predictions/mnist", token="k", headers=[("authorization", "Bearer k")])[0] == "batcher"
