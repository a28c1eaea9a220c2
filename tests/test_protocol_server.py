"""Integration: KServe v1 and the Open Inference Protocol (v2) against real servers of both runtimes, batching on.

The tests of `served` run four times: on TorchServe with the kit's own configuration (no envelope), with TorchServe's
`kservev2` and `kserve` envelopes switched on the way KServe's runtime does it (TS_SERVICE_ENVELOPE, read because of
enable_envvars_config=true), which on their own lose every request of a batch but the first (the handler makes them
a pass-through), and on the kit's kserve runtime (KServe's ModelServer). The rest (errors, explanations, the
documented examples) run on both runtimes: the same requests get the same answers and the same messages.
"""

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from conftest import ROOT
from harness import TorchServe
from PIL import Image
from tritonclient.utils import InferenceServerException

from mnist_kit import constants as C

CONCURRENT = 32


@pytest.fixture(
    scope="module",
    params=[None, "kservev2", "kserve", "kserve-runtime"],
    ids=["no-envelope", "kservev2", "kserve", "kserve-runtime"],
)
def served(request, server, model_store):
    """The shared TorchServe, one of its own with TorchServe's envelope named by the parameter, or the kserve
    runtime."""
    if request.param is None:
        yield server
        return
    if request.param == "kserve-runtime":
        yield request.getfixturevalue("kserve_runtime")
        return
    env = {"TS_SERVICE_ENVELOPE": request.param}
    with TorchServe(model_store, env=env, properties={"enable_envvars_config": "true"}) as ts:
        yield ts


@pytest.fixture(params=["torchserve", "kserve-runtime"])
def either(request, server, kserve_runtime):
    """The shared TorchServe, then the kserve runtime: what both runtimes must answer alike."""
    return server if request.param == "torchserve" else kserve_runtime


def post_json(url: str, body, timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def labels(paths) -> list[int]:
    return [int(p.stem) for p in paths]


def v2_bytes(paths, request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "images", "shape": [len(paths)], "datatype": "BYTES", "data": [b64(p) for p in paths]}]}
    return {"id": request_id, **body} if request_id else body


def outputs(answer: dict) -> dict:
    return {o["name"]: o for o in answer["outputs"]}


def test_v1_predicts_one_answer_per_instance(served, digits):
    status, answer = post_json(
        f"{served.inference_url}/v1/models/mnist:predict", {"instances": [{"data": b64(p)} for p in digits]}
    )
    assert status == 200 and [p["digit"] for p in answer["predictions"]] == labels(digits)


def test_v2_bytes_answers_every_element_with_the_protocols_outputs(served, digits):
    status, answer = post_json(f"{served.inference_url}/v2/models/mnist/infer", v2_bytes(digits, "batch-1"))
    assert status == 200
    assert (answer["id"], answer["model_name"], answer["model_version"]) == ("batch-1", "mnist", "1.0")
    predict, table = outputs(answer)["predict"], outputs(answer)["probabilities"]
    assert predict["datatype"] == "INT64" and predict["shape"] == [10] and predict["data"] == labels(digits)
    assert table["datatype"] == "FP32" and table["shape"] == [10, 10]
    assert np.array(table["data"]).reshape(10, 10).argmax(1).tolist() == labels(digits)


@pytest.mark.parametrize("datatype, scale", [("FP32", 1 / 255), ("UINT8", 1)])
def test_v2_tensors_of_n_images_are_read(served, digits, datatype, scale):
    batch = np.stack([pixels(p) for p in digits]) * scale
    body = {"inputs": [{"name": "x", "shape": [10, 1, 28, 28], "datatype": datatype, "data": batch.flatten().tolist()}]}
    status, answer = post_json(f"{served.inference_url}/v2/models/mnist/infer", body)
    assert status == 200 and outputs(answer)["predict"]["data"] == labels(digits)


def test_concurrent_v2_requests_with_different_images_each_get_their_own_answer(served, digits):
    def ask(i: int):
        path = digits[i % 10]
        return i, post_json(f"{served.inference_url}/v2/models/mnist/infer", v2_bytes([path], f"request-{i}"))

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(ask, range(CONCURRENT)))
    for i, (status, answer) in answers:
        assert status == 200, answer
        assert answer["id"] == f"request-{i}" and outputs(answer)["predict"]["data"] == [i % 10]
    assert served.count_in_log("number of batch response mismatched") == 0


def test_a_v2_client_reads_base64_bytes_and_fp32_tensors(served, digits):
    client = triton.InferenceServerClient(url=served.inference_url.removeprefix("http://"))
    images = triton.InferInput("images", [10], "BYTES")
    images.set_data_from_numpy(np.array([b64(p) for p in digits], dtype=object), binary_data=False)
    wanted = [triton.InferRequestedOutput(name, binary_data=False) for name in C.V2_OUTPUTS]
    result = client.infer("mnist", [images], outputs=wanted, request_id="triton-1")
    assert result.as_numpy("predict").tolist() == labels(digits)
    assert result.as_numpy("probabilities").shape == (10, 10) and result.get_response()["id"] == "triton-1"

    tensor = triton.InferInput("pixels", [10, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.stack([pixels(p) for p in digits]).astype(np.float32) / 255)
    assert client.infer("mnist", [tensor]).as_numpy("predict").tolist() == labels(digits)


def test_a_v2_client_sends_image_files_as_binary_bytes(served, digits):
    """tritonclient's default: binary tensor data after the JSON header, BYTES elements the files themselves."""
    client = triton.InferenceServerClient(url=served.inference_url.removeprefix("http://"))
    images = triton.InferInput("images", [3], "BYTES")
    images.set_data_from_numpy(np.array([p.read_bytes() for p in digits[4:7]], dtype=object))
    assert client.infer("mnist", [images]).as_numpy("predict").tolist() == [4, 5, 6]


def test_a_v2_client_gets_the_servers_message_for_a_bad_datatype(either, digits):
    client = triton.InferenceServerClient(url=either.inference_url.removeprefix("http://"))
    tensor = triton.InferInput("pixels", [28, 28], "INT32")
    tensor.set_data_from_numpy(pixels(digits[0]).astype(np.int32), binary_data=False)
    with pytest.raises(InferenceServerException, match="input 'pixels': datatype \"INT32\" is not supported"):
        client.infer("mnist", [tensor])


@pytest.mark.parametrize(
    "tensor, message",
    [
        ({"datatype": "FP64", "shape": [28, 28], "data": [0.0] * 784}, 'datatype "FP64" is not supported'),
        ({"datatype": "FP32", "shape": [784], "data": [0.0] * 784}, "shape [784] is not a batch of 28×28 images"),
        ({"datatype": "BYTES", "shape": [1], "data": ["%%%"]}, "element 0 is not valid base64"),
    ],
    ids=["datatype", "shape", "base64"],
)
def test_a_bad_v2_input_gets_400_naming_the_input_and_the_fault(either, tensor, message):
    status, answer = post_json(f"{either.inference_url}/v2/models/mnist/infer", {"inputs": [{"name": "x", **tensor}]})
    assert status == 400 and answer["error"].startswith("input 'x': ") and message in answer["error"]


def test_a_bad_request_fails_alone_in_its_batch(either, digits):
    bodies = [
        v2_bytes([digits[i % 10]]) if i % 2 else {"inputs": [{"name": "x", "datatype": "FP64"}]} for i in range(8)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post_json(f"{either.inference_url}/v2/models/mnist/infer", b), bodies))
    assert [status for status, _ in answers] == [400, 200] * 4
    assert [outputs(a)["predict"]["data"] for _, a in answers[1::2]] == [[1], [3], [5], [7]]


def test_v2_explain_gives_attributions_for_each_image(either, digits):
    status, answer = post_json(f"{either.inference_url}/v2/models/mnist/explain", v2_bytes(digits[2:4], "why"))
    assert status == 200 and answer["id"] == "why"
    assert outputs(answer)["predict"]["data"] == [2, 3] and outputs(answer)["attributions"]["shape"] == [2, 28, 28]


def test_v1_explain_gives_one_explanation_per_instance(either, digits):
    body = {"instances": [{"data": b64(digits[8])}]}
    status, answer = post_json(f"{either.inference_url}/v1/models/mnist:explain", body)
    assert status == 200 and answer["explanations"][0]["digit"] == 8
    assert np.array(answer["explanations"][0]["attributions"]).shape == (28, 28)


def test_predictions_still_answers_raw_images_and_the_kits_json(either, digits):
    req = urllib.request.Request(
        f"{either.inference_url}/predictions/mnist", data=digits[7].read_bytes(), headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        assert json.loads(response.read())["digit"] == 7
    status, answer = post_json(f"{either.inference_url}/predictions/mnist", {"data": b64(digits[9])})
    assert status == 200 and answer["digit"] == 9


def doc_block(language: str, after: str = "### KServe v1 and the Open Inference Protocol (v2)") -> str:
    text = (ROOT / "docs" / "SERVING.md").read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```\n", start)]


def test_the_documented_curl_examples_work_as_pasted(either):
    script = doc_block("bash").replace("http://127.0.0.1:8080", either.inference_url)
    result = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    decoder, text = json.JSONDecoder(), result.stdout.strip()
    v1, end = decoder.raw_decode(text)
    v2, _ = decoder.raw_decode(text[end:].lstrip())
    assert [p["digit"] for p in v1["predictions"]] == [7, 7]
    assert v2["id"] == "42" and outputs(v2)["predict"]["data"] == [7]


def test_the_documented_triton_client_example_works_as_pasted(either):
    code = doc_block("python").replace("127.0.0.1:8080", either.inference_url.removeprefix("http://"))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[7]"
