"""The kserve runtime (`mnist-kit serve --runtime kserve`: KServe's ModelServer over the same archive and core): its
gRPC v2 service, health and metadata, batching, metrics, a draining stop, the CLI, and answers identical to
TorchServe's. tests/test_protocol_server.py runs the REST protocol tests on it too."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from click.testing import CliRunner
from conftest import ROOT
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.evaluation import measure
from mnist_kit.serving import client
from mnist_kit.serving.kserve.launcher import PrivateKServe
from mnist_kit.serving.processes import free_port
from mnist_kit.training import mnist


@pytest.fixture(scope="module")
def grpc_client(kserve_runtime):
    return triton_grpc.InferenceServerClient(kserve_runtime.grpc_address)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def post(url: str, data: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_and_model_readiness_answer_over_rest_and_grpc(kserve_runtime, grpc_client):
    assert get_json(f"{kserve_runtime.inference_url}/v2/health/live")["live"] is True
    assert get_json(f"{kserve_runtime.inference_url}/v2/health/ready")["ready"] is True
    assert get_json(f"{kserve_runtime.inference_url}/v2/models/mnist/ready")["ready"] is True
    assert grpc_client.is_server_live() and grpc_client.is_server_ready() and grpc_client.is_model_ready("mnist")


def test_model_metadata_describes_the_inputs_and_outputs(kserve_runtime, grpc_client):
    metadata = get_json(f"{kserve_runtime.inference_url}/v2/models/mnist")
    assert metadata["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("predict", "INT64"),
        ("probabilities", "FP32"),
        ("flags", "BYTES"),
    ]
    assert [o.name for o in grpc_client.get_model_metadata("mnist").outputs] == list(C.V2_OUTPUTS)


def test_grpc_reads_image_files_as_bytes(grpc_client, digits):
    images = triton_grpc.InferInput("images", [3], "BYTES")
    images.set_data_from_numpy(np.array([p.read_bytes() for p in digits[1:4]], dtype=object))
    result = grpc_client.infer("mnist", [images], request_id="grpc-1")
    assert result.as_numpy("predict").tolist() == [1, 2, 3] and result.get_response().id == "grpc-1"
    assert result.as_numpy("probabilities").shape == (3, 10) and result.as_numpy("flags").tolist() == [b""] * 3


KSERVE_CLIENT = """
import asyncio, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(address):
    client = InferenceGRPCClient(address)
    images = InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([open(sys.argv[2], "rb").read()], dtype=object))
    response = await client.infer(InferRequest(model_name="mnist", infer_inputs=[images]))
    print({o.name: o.as_numpy().tolist() for o in response.outputs}["predict"])
    print(await client.is_server_ready(), await client.is_model_ready("mnist"))
    await client.close()

asyncio.run(main(sys.argv[1]))
"""


def test_kserves_own_grpc_client_reaches_it(kserve_runtime, digits):
    """KServe's InferenceGRPCClient, in a process of its own: KServe and tritonclient register the same protobuf
    names (inference.*), so one Python process cannot import both."""
    command = [sys.executable, "-c", KSERVE_CLIENT, kserve_runtime.grpc_address, str(digits[7])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["[7]", "True True"]


def test_grpc_reads_a_uint8_tensor(grpc_client, digits):
    tensor = triton_grpc.InferInput("pixels", [2, 28, 28], "UINT8")
    tensor.set_data_from_numpy(np.stack([np.asarray(Image.open(p)) for p in digits[5:7]]).astype(np.uint8))
    assert grpc_client.infer("mnist", [tensor]).as_numpy("predict").tolist() == [5, 6]


def test_grpc_reads_typed_contents_as_well_as_raw_ones(kserve_runtime, digits):
    """Typed `contents` (what tritonclient never sends, other clients do): the protobuf built by hand."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(digits[8].read_bytes())
    with grpc.insecure_channel(kserve_runtime.grpc_address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    predict = np.frombuffer(response.raw_output_contents[0], dtype=np.int64)
    assert [o.name for o in response.outputs] == list(C.V2_OUTPUTS) and predict.tolist() == [8]


def test_a_bad_grpc_request_is_invalid_argument_with_the_kits_message(grpc_client):
    bad = triton_grpc.InferInput("x", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    with pytest.raises(triton_grpc.InferenceServerException) as error:
        grpc_client.infer("mnist", [bad])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (
        error.value.message() == "input 'x': element 0: not a decodable image: send PNG, JPEG, BMP, GIF, WebP or TIFF"
    )


def test_concurrent_requests_share_batches_and_the_batch_sizes_are_a_metric(kserve_runtime, digits):
    def ask(i: int):
        return i, post(f"{kserve_runtime.inference_url}/predictions/mnist", digits[i % 10].read_bytes())

    def batch_sizes() -> dict[float, float]:
        metrics = urllib.request.urlopen(f"{kserve_runtime.inference_url}/metrics", timeout=30).read().decode()
        return {
            float(line.split('le="')[1].split('"')[0]): float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("BatchSize_bucket") and "+Inf" not in line
        }

    # Bursts of 320 from 32 threads, up to five: a Python client on a loaded 2-core machine can send so slowly that a
    # whole burst finds the worker idle each time (every batch of one), which says nothing about the batcher.
    for _ in range(5):
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, range(320)))
        assert all(status == 200 and answer["digit"] == i % 10 for i, (status, answer) in answers)
        counts = batch_sizes()
        if counts[1.0] < max(counts.values()):  # some batches held more than one request
            break
    assert counts[1.0] < max(counts.values())
    metrics = urllib.request.urlopen(f"{kserve_runtime.inference_url}/metrics", timeout=30).read().decode()
    waits = [line for line in metrics.splitlines() if line.startswith(("QueueTime_count", "BatchSize_count"))]
    assert len({line.split()[-1] for line in waits}) == 1  # a queue time for every batch


def test_the_cores_own_metrics_are_on_metrics(kserve_runtime, digits):
    post(f"{kserve_runtime.inference_url}/predictions/mnist", digits[2].read_bytes())
    post(f"{kserve_runtime.inference_url}/predictions/mnist", b"junk")
    deadline = time.monotonic() + 10  # the core hands its totals over once a second
    while time.monotonic() < deadline:
        metrics = urllib.request.urlopen(f"{kserve_runtime.inference_url}/metrics", timeout=30).read().decode()
        if (
            'RejectedInputs_total{Reason="undecodable"}' in metrics
            and 'PredictionsPerDigit_total{Digit="2"}' in metrics
        ):
            break
        time.sleep(0.2)
    assert 'PredictionsPerDigit_total{Digit="2"}' in metrics and 'RejectedInputs_total{Reason="undecodable"}' in metrics
    assert "ServingForm{Form=" in metrics and "PreprocessingTime" in metrics


def test_an_unknown_model_is_a_404_naming_the_served_one(kserve_runtime, digits):
    status, answer = post(f"{kserve_runtime.inference_url}/predictions/other", digits[0].read_bytes())
    assert status == 404 and "this server serves mnist" in answer["message"]


@pytest.fixture(scope="module")
def same_form(server, model_store):
    """A kserve runtime forced to the serving form the shared TorchServe's workers chose."""
    form = client.described(server.management_url, C.MODEL_NAME, server.management_token)[1]["serving_form"]
    with PrivateKServe(model_store / "mnist.mar", serving_form=form) as ks:
        yield ks


def test_both_runtimes_give_the_same_answers_to_the_same_images(server, same_form, digits, held_out):
    """Same archive, same form: the same digit and flags, probabilities within 1e-6, on the sample digits and a
    sample of every held-out kind."""
    images = [p.read_bytes() for p in digits] + [data for _, _, data in held_out[::20]]
    for data in images:
        ts_status, ts_answer = post(f"{server.inference_url}/predictions/mnist", data, client.content_type(data))
        ks_status, ks_answer = post(f"{same_form.inference_url}/predictions/mnist", data, client.content_type(data))
        assert ts_status == ks_status
        if ts_status == 200:
            assert ts_answer["digit"] == ks_answer["digit"] and ts_answer["flags"] == ks_answer["flags"]
            assert np.allclose(ts_answer["probabilities"], ks_answer["probabilities"], atol=1e-6, rtol=0)
        else:
            assert ts_answer["message"] == ks_answer["message"]


def test_a_stop_answers_the_requests_already_received(model_store, digits):
    """SIGTERM under load: the server stops accepting, answers every request it has read, and exits cleanly within
    its grace period. A client racing the close sees its connection refused or reset before any answer began (never
    read by the server: a prediction is safe to send again, and the kit's client does); none gets an error status or
    a cut answer."""
    ks = PrivateKServe(model_store / "mnist.mar").start()
    body = digits[7].read_bytes()
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                status, answer = post(f"{ks.inference_url}/predictions/mnist", body)
                results.append(status if answer.get("digit") == 7 else f"wrong answer {answer}")
            except (urllib.error.URLError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                results.append(type(reason).__name__)
                if isinstance(reason, ConnectionRefusedError):
                    return

    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(load) for _ in range(16)]
            time.sleep(2)
            os.kill(ks.server.pid, signal.SIGTERM)
            code = ks.server.wait(timeout=C.KSERVE_GRACE_S + 10)
            stop.set()
            for f in futures:
                f.result(timeout=60)
    finally:
        ks.stop()
    assert code == 0 and results.count(200) > 16
    unread = {"ConnectionRefusedError", "ConnectionResetError", "BrokenPipeError", "RemoteDisconnected"}
    assert set(results) <= {200} | unread, set(results)


def test_serve_and_stop_run_the_kserve_runtime(model_store, tmp_path, digits):
    http, grpc_port = free_port(), free_port()
    env = {"TMPDIR": str(tmp_path), C.HOME_ENV: str(tmp_path)}
    runner = CliRunner()
    archive = str(model_store / "mnist.mar")
    args = ["serve", "--runtime", "kserve", "--archive", archive, "--http-port", http, "--grpc-port", grpc_port]
    started = runner.invoke(cli, [str(a) for a in [*args, "--workers", 2]], env=env)
    try:
        assert started.exit_code == 0, started.output
        assert f"REST http://127.0.0.1:{http}" in started.output and "2 worker(s)" in started.output
        again = runner.invoke(cli, [str(a) for a in args], env=env)
        assert again.exit_code == 1 and "already running" in again.output
        predicted = runner.invoke(cli, ["predict", str(digits[3]), "--url", f"http://127.0.0.1:{http}"], env=env)
        assert predicted.exit_code == 0 and predicted.output.startswith(f"{digits[3]}: 3 (")
    finally:
        stopped = runner.invoke(cli, ["stop"], env=env)
    assert stopped.exit_code == 0 and "The kserve runtime (pid" in stopped.output
    assert (tmp_path / C.LOGS / "kserve.out").is_file()


def test_serve_without_an_archive_says_to_train_and_archive_first(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--runtime", "kserve", "--archive", str(tmp_path / "none.mar")], env={"TMPDIR": str(tmp_path)}
    )
    assert result.exit_code == 1 and "train and archive first" in result.output


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory) -> dict:
    """The environment of a Python that cannot import torch, as in a venv without it: a sitecustomize that every
    process started with it (the server, its workers) runs first."""
    folder = tmp_path_factory.mktemp("without-torch")
    (folder / "sitecustomize.py").write_text("import sys\n\nsys.modules['torch'] = None  # import torch fails\n")
    return {"PYTHONPATH": str(folder)}


def test_the_kserve_runtime_serves_an_onnx_archive_where_torch_cannot_be_imported(model_store, without_torch, digits):
    with PrivateKServe(model_store / "mnist.mar", workers=2, env=without_torch) as ks:
        for path in digits:
            assert client.predict(path.read_bytes(), url=ks.inference_url)["digit"] == int(path.stem)
        described = client.described(ks.inference_url, C.MODEL_NAME)[1]
        assert described["serving_form"].startswith("onnx-") and described["torch"] is None
        status, answer = post(f"{ks.inference_url}/explanations/mnist", digits[7].read_bytes())
    assert status == 501
    assert "explanations need PyTorch and Captum, and this server lacks torch" in answer["message"]


def test_the_kserve_runtime_imports_torch_for_an_explanation_where_it_is_installed(kserve_runtime, digits):
    status, answer = post(f"{kserve_runtime.inference_url}/explanations/mnist", digits[7].read_bytes())
    assert status == 200 and answer["digit"] == 7 and np.array(answer["attributions"]).shape == (28, 28)


def test_v1_predict_answers_base64_instances(kserve_runtime, digits):
    body = json.dumps({"instances": [{"data": base64.b64encode(p.read_bytes()).decode()} for p in digits[:3]]})
    status, answer = post(f"{kserve_runtime.inference_url}/v1/models/mnist:predict", body.encode(), "application/json")
    assert status == 200 and [p["digit"] for p in answer["predictions"]] == [0, 1, 2]


def test_both_runtimes_read_the_10000_mnist_test_pngs_alike(trained_server, data_dir):
    """The default model, the form TorchServe's workers chose forced on the kserve runtime: the same digit and
    probabilities within 1e-6 on every test image sent as a PNG."""
    images, _ = mnist.load(data_dir, "test", download=False)
    form = client.described(trained_server.management_url, C.MODEL_NAME, trained_server.management_token)[1]
    with PrivateKServe(trained_server.model_store / "mnist.mar", workers=2, serving_form=form["serving_form"]) as ks:
        served = {
            name: measure.predict_endpoint(url, images)
            for name, url in (("torchserve", trained_server.inference_url), ("kserve", ks.inference_url))
        }
    assert (served["torchserve"].argmax(1) == served["kserve"].argmax(1)).all()
    assert np.abs(served["torchserve"] - served["kserve"]).max() <= 1e-6


def test_the_documented_grpc_example_works_as_pasted(kserve_runtime):
    text = (ROOT / "docs" / "SERVING.md").read_text()
    start = text.index("```python\n", text.index("## The kserve runtime")) + len("```python\n")
    code = text[start : text.index("```\n", start)].replace("127.0.0.1:8081", kserve_runtime.grpc_address)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[7]"
