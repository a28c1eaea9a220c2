"""The serving core's stages in process (worker/core.py: decode each request, one batched inference, encode the
answers), and TorchServe's adapter over it (mnist_handler.py).

A small stand-in for TorchServe's context carries the headers in and the statuses out; tests/test_server.py
and tests/test_fuzz.py check the same handler behind a real TorchServe.
"""

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from harness import Recorded
from PIL import Image

from mnist_handler import MnistHandler
from mnist_kit import constants as C
from mnist_kit.worker import preprocess
from mnist_kit.worker.answers import Answer
from mnist_kit.worker.core import Batch, Core
from mnist_kit.worker.preprocess import Picture
from mnist_kit.worker.protocols import Request
from mnist_kit.worker.request_errors import InputError
from mnist_model import MnistClassificationNet


class Context:
    """What MnistHandler reads from TorchServe's context (model dir, manifest, headers) and writes back to it."""

    def __init__(self, model_dir, manifest: dict, headers: list[dict] | None = None, yaml_config: dict | None = None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": manifest}
        self.model_yaml_config = yaml_config or {}
        self.metrics = Recorded()
        self.headers = headers or []
        self.statuses, self.content_types = {}, {}

    def get_request_header(self, i, name):
        return self.headers[i].get(name) if i < len(self.headers) else None

    def get_all_request_header(self, i):
        return self.headers[i] if i < len(self.headers) else {}

    def set_response_status(self, code, phrase, i):
        self.statuses[i] = (code, phrase)

    def set_response_content_type(self, i, value):
        self.content_types[i] = value


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def png_request(path) -> tuple[dict, dict]:
    return {"body": path.read_bytes()}, {"Content-Type": "image/png"}


@pytest.fixture(autouse=True)
def torch_threads():
    """initialize() sets one intra-op thread for its worker process; here that process is pytest's, whose later
    training would run on one thread and so give another model than `mnist-kit train`. Put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


EAGER = {"serializedFile": "mnist_sd.pt", "modelFile": "mnist_model.py"}


@pytest.fixture
def eager_dir(untrained_checkpoint, tmp_path):
    """What an eager archive (a state_dict and mnist_model.py) unpacks to, on random weights: no training needed."""
    (tmp_path / "mnist_sd.pt").write_bytes(untrained_checkpoint.read_bytes())
    return tmp_path


@pytest.fixture
def core(eager_dir):
    return Core(str(eager_dir), EAGER)


@pytest.fixture
def handler(eager_dir):
    handler = MnistHandler()
    handler.initialize(Context(eager_dir, EAGER))
    return handler


def decode(core, requests: list[tuple[dict, dict]]) -> Batch:
    return core.decode([row for row, _ in requests], [headers for _, headers in requests])


def replies(core, requests: list[Request], answers: list[Answer]) -> list:
    """What encode answers: each request's body, and the statuses of the failed ones, by position."""
    encoded = core.encode(Batch(requests, answers=answers))
    return [r.body for r in encoded], {i: (r.status, r.error_type) for i, r in enumerate(encoded) if r.status != 200}


def test_decode_turns_each_row_into_its_pixels_or_its_own_error(core, digits):
    rows = [
        png_request(digits[3]),
        ({"body": b"not an image"}, {"Content-Type": "image/png"}),
        ({"body": b"seven"}, {"Content-Type": "text/plain"}),
    ]
    seven, undecodable, text = decode(core, rows).requests
    assert seven.protocol == "plain" and len(seven.images) == 1 and seven.error is None
    assert seven.images[0].pixels.shape == (28, 28) and seven.images[0].pixels.dtype == np.uint8
    assert undecodable.images == [] and undecodable.error.status == 400 and undecodable.error.reason == "undecodable"
    assert text.error.status == 415


def test_decode_reads_a_v2_body_as_one_request_of_several_images(core, digits):
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": [b64(digits[1]), b64(digits[2])]}]}
    (request,) = decode(core, [({"body": body}, {"Content-Type": "application/json"})]).requests
    assert request.protocol == "v2" and len(request.images) == 2 and request.error is None


def test_a_bug_while_decoding_fails_only_its_row_with_a_500(core, digits, monkeypatch):
    calls = iter([RuntimeError("boom"), None])

    def flaky(row, kind):
        error = next(calls)
        if error:
            raise error
        return Picture(np.zeros((28, 28), np.uint8))

    monkeypatch.setattr("mnist_kit.worker.request_bodies.read_plain", flaky)
    failed, decoded = decode(core, [({"body": b""}, {"Content-Type": "image/png"})] * 2).requests
    assert failed.error.status == 500 and "RuntimeError: boom" in str(failed.error)
    assert decoded.images[0].pixels.shape == (28, 28)


def test_inference_is_one_forward_pass_over_the_pictures_and_the_digits_of_several(core):
    calls = []
    model = core.model
    core.model = lambda x: calls.append(x.shape) or model(x)
    blank, nine = np.zeros((28, 28), np.uint8), np.full((28, 28), 9, np.uint8)
    results = core.infer(Batch([Request("plain", [Picture(blank)]), Request("plain", [Picture(nine, [blank, nine])])]))
    assert calls == [(4, 1, 28, 28)]
    assert len(results.answers) == 2 and "several_digits" in results.answers[1].flags
    for answer in results.answers:
        assert len(answer.probabilities) == 10 and sum(answer.probabilities) == pytest.approx(1, abs=1e-5)


def test_a_batch_where_nothing_decoded_runs_no_inference(core):
    core.model = lambda x: pytest.fail("the model ran on an empty batch")
    assert core.infer(Batch([Request("plain", [], error=InputError("blank"))])).answers == []


def test_encode_writes_json_answers_and_a_status_for_each_failed_row(core):
    probabilities = [0.0, 0.0, 0.9, 0.1, 0, 0, 0, 0, 0, 0]
    image = Picture(np.zeros((28, 28), np.uint8))
    requests = [Request("plain", [image]), Request("plain", [], error=InputError("image too large", 413))]
    (answer, error), statuses = replies(core, requests, [Answer(probabilities)])
    assert json.loads(answer) == {"digit": 2, "confidence": 0.9, "flags": [], "probabilities": probabilities}
    assert error == {"code": 413, "type": "RequestEntityTooLargeException", "message": "image too large"}
    assert statuses == {1: (413, "RequestEntityTooLargeException")}


def test_encode_gives_each_request_the_probabilities_of_its_own_images(core):
    image = Picture(np.zeros((28, 28), np.uint8))
    one_hot = [Answer(np.eye(10)[d].tolist()) for d in (3, 4, 5)]
    (v1, plain), _ = replies(core, [Request("v1", [image, image]), Request("plain", [image])], one_hot)
    assert [p["digit"] for p in json.loads(v1)["predictions"]] == [3, 4] and json.loads(plain)["digit"] == 5


def test_a_v2_error_is_the_protocols_error_object(core):
    (error,), statuses = replies(core, [Request("v2", [], error=InputError("input 'x': bad shape"))], [])
    assert error == {"error": "input 'x': bad shape"} and statuses == {0: (400, "BadRequestException")}


def test_encode_counts_the_batch_in_the_metrics_window(core, digits):
    requests = [png_request(digits[1]), ({"body": b"junk"}, {"Content-Type": "image/png"})]
    core.encode(core.infer(decode(core, requests)))
    window = core.metrics
    assert sum(window.digits.values()) == 1 and window.rejected == {"undecodable": 1} and window.requests == 2


def test_handle_answers_each_request_of_a_mixed_batch_in_order(handler, digits):
    requests = [png_request(digits[1]), ({"body": b""}, {"Content-Type": "image/png"}), png_request(digits[8])]
    context = Context(".", {}, [headers for _, headers in requests])
    answers = handler.handle([row for row, _ in requests], context)
    assert [json.loads(a)["digit"] in range(10) for a in (answers[0], answers[2])] == [True, True]
    assert answers[1]["code"] == 400 and context.statuses == {1: (400, "BadRequestException")}
    assert context.content_types == {0: "application/json", 1: "application/json", 2: "application/json"}


def test_handle_times_the_batch_as_torchserves_handler_time(handler, digits):
    context = Context(".", {}, [png_request(digits[1])[1]])
    handler.handle([png_request(digits[1])[0]], context)
    assert [name for name, _, _ in context.metrics.reported] == ["HandlerTime"]


def test_a_serialized_file_that_is_not_a_state_dict_fails_the_worker_saying_to_archive_again(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"an older mnist-kit's TorchScript")
    with pytest.raises(RuntimeError, match="is not a state_dict .* archive it again with mnist-kit archive"):
        Core(str(tmp_path), {"serializedFile": "model.pt"})


def auto_archive_dir(checkpoint, tmp_path):
    """What an auto archive unpacks to, without its ONNX forms (those need calibration data): the state_dict and
    forms.json listing the eager forms."""
    (tmp_path / "mnist_sd.pt").write_bytes(checkpoint.read_bytes())
    listed = {name: {"runtime": "torch", "accuracy": 10.0} for name in ("eager-fp32", "eager-fp32-aten")}
    (tmp_path / C.FORMS_FILE).write_text(json.dumps({"float_accuracy": 10.0, "forms": listed}))
    return tmp_path


def test_an_auto_archive_serves_the_form_it_timed_fastest_and_describes_its_choice(untrained_checkpoint, tmp_path):
    handler = MnistHandler()
    context = Context(auto_archive_dir(untrained_checkpoint, tmp_path), {"serializedFile": "mnist_sd.pt"})
    handler.initialize(context)
    described = json.loads(handler.handle([{}], Context(".", {}, [{"describe": "True"}]))[0])
    core = handler.core
    assert described["serving_form"] == core.form in ("eager-fp32", "eager-fp32-aten")
    assert described["reason"].startswith(("fastest", "within 5 %")) and set(described["timings_ms"]) == {
        "eager-fp32",
        "eager-fp32-aten",
    }
    core.metrics.report()  # to TorchServe's metrics cache, through the adapter
    assert core.float_model is not None and ("ServingForm", 1, {"Form": core.form}) in context.metrics.reported


def test_the_environment_forces_a_serving_form_over_the_timings(untrained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(C.SERVING_FORM_ENV, "eager-fp32-aten")
    core = Core(str(auto_archive_dir(untrained_checkpoint, tmp_path)), {"serializedFile": "mnist_sd.pt"})
    assert core.form == "eager-fp32-aten" and "forced" in core.form_reason and core.form_timings["eager-fp32"] == {}


def test_the_archive_config_forces_a_serving_form(untrained_checkpoint, tmp_path):
    handler = MnistHandler()
    context = Context(
        auto_archive_dir(untrained_checkpoint, tmp_path),
        {"serializedFile": "mnist_sd.pt"},
        yaml_config={"handler": {"serving_form": "eager-fp32"}},
    )
    handler.initialize(context)
    assert handler.core.form == "eager-fp32" and handler.core.model.module is not handler.core.float_model


def test_explanations_attribute_the_predicted_digit_over_the_28_by_28_input(handler, digits):
    """The attributions are Integrated Gradients of the digit the model predicts (recomputed here for that target),
    not another digit's; they lie on the ink (a blank baseline gives the paper none)."""
    from captum.attr import IntegratedGradients

    requests = [png_request(digits[5])]
    context = Context(".", {}, [{**headers, "explain": "True"} for _, headers in requests])
    [answer] = handler.handle([row for row, _ in requests], context)
    answer = json.loads(answer)
    pixels = np.array(answer["pixels"], dtype=np.uint8)
    model = handler.core.float_model
    x = torch.from_numpy(preprocess.model_input([pixels]))
    assert answer["digit"] == int(model(x).argmax(1))
    baseline = torch.from_numpy(preprocess.model_input([np.zeros_like(pixels)]))

    def attributions(target: int) -> np.ndarray:
        found = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=C.EXPLAIN_STEPS)
        return found[0, 0].detach().numpy().round(6)

    served = np.array(answer["attributions"])
    assert served.shape == (28, 28) and np.allclose(served, attributions(answer["digit"]), atol=1e-5)
    assert not np.allclose(served, attributions((answer["digit"] + 1) % 10), atol=1e-4)
    assert np.abs(served).sum() > 0 and (served[pixels == 0] == 0).all()


def test_a_server_without_captum_answers_explanations_with_501_saying_what_to_install(handler, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # as where it is not installed
    requests = [png_request(digits[5])]
    context = Context(".", {}, [{**headers, "explain": "True"} for _, headers in requests])
    [answer] = handler.handle([row for row, _ in requests], context)
    assert answer["code"] == 501 and context.statuses[0][0] == 501
    assert "explanations need PyTorch and Captum, and this server lacks captum: install them" in answer["message"]
    assert "pip install 'mnist-kit[train]'" in answer["message"]


def test_loading_the_handler_imports_neither_captum_nor_click():
    code = "import sys, mnist_handler; print(sorted({'captum', 'click'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_handler_keeps_the_pixel_limit():
    assert Image.MAX_IMAGE_PIXELS == C.MAX_IMAGE_PIXELS


def test_an_eager_archive_serves_the_float_network_in_eval_mode(core):
    assert core.form == "eager-fp32" and isinstance(core.model.module, MnistClassificationNet)
    assert not core.model.module.training and isinstance(core.float_model, MnistClassificationNet)


def test_torchserves_kservev2_envelope_hands_every_request_of_a_batch_to_the_handler(handler, digits):
    from ts.torch_handler.request_envelope.kservev2 import KServev2Envelope

    bodies = [
        {"id": str(d), "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [b64(digits[d])]}]}
        for d in (1, 2)
    ]
    context = Context(".", {}, [{"Content-Type": "application/json"}] * 2)
    answers = KServev2Envelope(handler.handle).handle([{"body": body} for body in bodies], context)
    assert [json.loads(a)["id"] for a in answers] == ["1", "2"]


def test_a_strict_request_for_a_picture_that_is_no_digit_gets_422(core):
    spread, seven = Answer([0.1] * 10, ["not_a_digit", "low_confidence"]), Answer(np.eye(10)[7].tolist())
    image = Picture(np.zeros((28, 28), np.uint8))
    requests = [Request("plain", [image], strict=True), Request("plain", [image], strict=True)]
    (refused, answer), statuses = replies(core, requests, [spread, seven])
    assert refused["code"] == 422 and "not a digit" in refused["message"] and C.STRICT_HEADER in refused["message"]
    assert json.loads(answer)["digit"] == 7 and statuses == {0: (422, "UnprocessableEntityException")}


def test_without_strict_a_picture_that_is_no_digit_is_answered_with_its_flag(core):
    spread = Answer([0.1] * 10, ["not_a_digit", "low_confidence"])
    (answer,), statuses = replies(core, [Request("plain", [Picture(np.zeros((28, 28), np.uint8))])], [spread])
    assert json.loads(answer)["flags"] == ["not_a_digit", "low_confidence"] and statuses == {}


def test_inference_flags_a_spread_answer_as_no_digit(core):
    core.model = lambda x: np.full(
        (x.shape[0], 10), -np.log(10.0), np.float32
    )  # uniform: the trained answer to no digit
    (answer,) = core.infer(Batch([Request("plain", [Picture(np.zeros((28, 28), np.uint8))])])).answers
    assert answer.flags == ["not_a_digit", "low_confidence"]


def test_the_strict_header_is_read_whatever_its_case(core, digits):
    rows = [png_request(digits[3])]
    rows[0][1]["x-strict"] = "true"
    (request,) = decode(core, rows).requests
    assert request.strict
