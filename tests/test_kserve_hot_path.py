"""The kserve runtime's hot path (serving/kserve/hot_path.py): the hot routes reach the batcher straight, every
request it would answer differently goes on to ModelServer's FastAPI app, and what it answers it answers exactly as
the FastAPI routes (serving/kserve/routes.py) do: both read and write REST through rest.py."""

import asyncio
import base64
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import DIGITS
from fastapi import FastAPI

from mnist_kit import constants as C
from mnist_kit.serving.kserve.batcher import MicroBatcher
from mnist_kit.serving.kserve.hot_path import HotPath
from mnist_kit.serving.kserve.routes import add_routes
from mnist_kit.worker.core import Core, Reply


class Model:
    """A stand-in MnistModel serving `versions`, the first the default, whose batchers record what they are handed
    (the row, the headers, and the version)."""

    name = "mnist"

    def __init__(self, versions=("1.0",)):
        self.submitted, self.version = [], versions[0]

        class Batcher:
            def __init__(batcher, version):
                batcher.version = version

            async def submit(batcher, row, headers, sent=None):
                self.submitted.append((row, headers, batcher.version))
                return Reply('{"digit": 7}')

        self.versions = {v: SimpleNamespace(version=v, batcher=Batcher(v)) for v in versions}

    def bare(self):  # what a request naming no version gets: the default (no canary here)
        return self.versions[self.version]

    def named(self, version):
        return self.versions.get(version)


async def asgi(app, path, *, method="PUT", headers=(), body=b"png"):
    """(status, headers, body) of one request to an ASGI app, with the body's length unless `headers` give one.
    Header values are sent latin-1 encoded, byte for byte as a client can send them (ASGI hands them on as bytes)."""
    if all(name != "content-length" for name, _ in headers):
        headers = [("content-length", str(len(body))), *headers]
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
    }
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def call(path, *, method="PUT", headers=(), body=b"png", token=None, versions=("1.0",)):
    """(who answered, status, body, what the batchers got) for one request through HotPath in front of a stand-in
    FastAPI app."""
    model, answered = Model(versions), []

    async def app(scope, receive, send):
        answered.append("fastapi")
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    hot_path = HotPath(app, model, token=token)
    status, _, answer = asyncio.run(asgi(hot_path, path, method=method, headers=headers, body=body))
    who = answered[0] if answered else ("batcher" if model.submitted else "nobody")
    return who, status, answer, model.submitted


@pytest.mark.unit
@pytest.mark.parametrize("path", ["/predictions/mnist", "/predictions/mnist/1.0", "/v2/models/mnist/infer"])
def test_the_hot_routes_reach_the_batcher_and_answer_its_reply(path):
    who, status, body, submitted = call(path, method="POST", headers=[("content-type", "image/png")])
    assert (who, status, json.loads(body)) == ("batcher", 200, {"digit": 7})
    assert submitted[0][0] == {"body": b"png"} and submitted[0][1]["content-type"] == "image/png"


@pytest.mark.unit
@pytest.mark.parametrize(
    "path, version",
    [
        ("/predictions/mnist", "1.0"),
        ("/predictions/mnist/2.0", "2.0"),
        ("/v2/models/mnist/infer", "1.0"),
        ("/v2/models/mnist/versions/2.0/infer", "2.0"),
    ],
)
def test_each_served_version_takes_the_hot_path_to_its_own_batcher(path, version):
    who, _, _, submitted = call(path, method="POST", versions=("1.0", "2.0"))
    assert who == "batcher" and submitted[0][2] == version


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
def test_a_body_over_the_limit_goes_on_to_the_fastapi_app():
    assert call("/predictions/mnist", headers=[("content-length", str(C.MAX_REQUEST_BYTES + 1))])[0] == "fastapi"


@pytest.mark.unit
def test_a_length_in_digits_other_than_ascii_ones_goes_on_to_the_fastapi_app():
    # b"\xb2", a latin-1 superscript two: str.isdigit() says yes, int() refuses it.
    assert call("/predictions/mnist", headers=[("content-length", "\u00b2")])[0] == "fastapi"


@pytest.mark.unit
def test_with_a_token_only_requests_carrying_it_take_the_hot_path():
    assert call("/predictions/mnist", token="k")[0] == "fastapi"  # FastAPI's middleware answers 401
    assert call("/predictions/mnist", token="k", headers=[("authorization", "Bearer k")])[0] == "batcher"


class Served:
    """What the REST routes read of MnistModel: its name and default version, and that version's real core and
    micro-batcher over it."""

    name, version = "mnist", "1.0"

    def __init__(self, core: Core):
        self.core = core
        self.versions = {"1.0": SimpleNamespace(version="1.0", core=core, batcher=MicroBatcher(core))}

    def bare(self):
        return self.versions[self.version]

    def named(self, version):
        return self.versions.get(version)


@pytest.fixture(scope="module")
def served(untrained_checkpoint, tmp_path_factory):
    """An eager archive's folder on random weights, served: real decoding and answers, no training."""
    folder = tmp_path_factory.mktemp("eager")
    (folder / "mnist_sd.pt").write_bytes(untrained_checkpoint.read_bytes())
    threads = torch.get_num_threads()  # the eager form sets one, as a worker runs: pytest's process keeps its own
    core = Core(str(folder), {"serializedFile": "mnist_sd.pt"}, serving_form="eager-fp32")
    torch.set_num_threads(threads)
    return Served(core)


THREE = DIGITS[3].read_bytes()
V2 = json.dumps(
    {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(THREE).decode()]}]}
)
PNG, JSON = ("content-type", "image/png"), ("content-type", "application/json")
SAME_REQUESTS = {
    "a good png": ("/predictions/mnist", "POST", [PNG], THREE),
    "a good v2 json": ("/v2/models/mnist/infer", "POST", [JSON], V2.encode()),
    "bad bytes": ("/predictions/mnist", "POST", [PNG], b"not an image"),
    "not json sent as json": ("/predictions/mnist", "POST", [JSON], b"{not json"),
    "a wrong model name": ("/predictions/digits", "POST", [PNG], THREE),
    "a batch that raises": ("/predictions/mnist", "POST", [PNG], THREE),
    "two content types": ("/predictions/mnist", "POST", [PNG, JSON], THREE),  # the first counts, on both
    "put on predictions": ("/predictions/mnist", "PUT", [PNG], THREE),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", SAME_REQUESTS)
def test_the_hot_path_answers_as_the_fastapi_route_does(case, served, monkeypatch):
    path, method, headers, body = SAME_REQUESTS[case]
    if case == "a batch that raises":
        monkeypatch.setattr(served.core, "infer", lambda batch: 1 / 0)
    app = FastAPI()
    add_routes(app, served)

    async def both():
        request = {"method": method, "headers": headers, "body": body}
        return await asgi(app, path, **request), await asgi(HotPath(app, served), path, **request)

    (status, sent, answer), (hot_status, hot_sent, hot_answer) = asyncio.run(both())
    assert (hot_status, hot_answer) == (status, answer)
    assert hot_sent[b"content-type"] == sent[b"content-type"] == b"application/json"
    assert hot_sent[b"content-length"] == sent[b"content-length"] == str(len(answer)).encode()
