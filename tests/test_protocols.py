"""Request bodies told apart (worker/request_bodies.py), and KServe v1 and Open Inference Protocol v2 bodies read and
written (worker/protocols.py), in process.

tests/test_protocol_server.py sends the same bodies to a real TorchServe, with and without its envelopes.
"""

import base64
import json
import struct

import numpy as np
import pytest
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.worker import protocols, request_bodies
from mnist_kit.worker.answers import Answer
from mnist_kit.worker.protocols import Request


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def v2(datatype: str, shape: list, data, name: str = "input-0", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def read(row: dict, content_type: str | None, headers: dict | None = None) -> Request:
    """A request as TorchServe's worker hands it over: its body fields, and its headers with the content type."""
    return request_bodies.read(row, {**({"Content-Type": content_type} if content_type else {}), **(headers or {})})


def read_json(document: dict, content_type: str | None = "application/json") -> Request:
    """As TorchServe's worker hands it over: parsed when sent as application/json, bytes otherwise."""
    body = document if content_type == "application/json" else json.dumps(document).encode()
    return read({"body": body}, content_type)


def error_of(document: dict) -> str:
    request = read_json(document)
    assert request.error is not None and request.error.status == 400 and request.images == []
    return str(request.error)


# Which protocol a request speaks


def test_an_image_body_is_a_plain_request(digits):
    request = read({"body": digits[7].read_bytes()}, "image/png")
    assert request.protocol == "plain" and np.array_equal(request.images[0].pixels, pixels(digits[7]))


def test_the_kits_own_json_forms_stay_plain_requests(digits):
    assert read_json({"data": b64(digits[2])}).protocol == "plain"
    assert read_json(pixels(digits[2]).tolist()).protocol == "plain"


def test_a_body_with_instances_is_kserve_v1(digits):
    assert read_json({"instances": [{"data": b64(digits[1])}]}).protocol == "v1"


def test_a_body_with_inputs_is_open_inference_protocol_v2(digits):
    assert read_json(v2("BYTES", [1], [b64(digits[1])])).protocol == "v2"


def test_a_v2_body_sent_without_a_content_type_is_recognised(digits):
    request = read_json(v2("BYTES", [1], [b64(digits[4])]), content_type=None)
    assert request.protocol == "v2" and np.array_equal(request.images[0].pixels, pixels(digits[4]))


def test_json_bytes_that_are_no_protocol_body_stay_plain_and_undecodable():
    request = read({"body": b'{"hello": 1}'}, None)
    assert request.protocol == "plain" and request.error.reason == "undecodable"


def test_a_v2_body_sent_as_a_form_says_to_name_its_json_content_type():
    request = read({'{"inputs": [{"name": "x"}]}': ""}, "application/x-www-form-urlencoded")
    assert request.error.status == 415 and "Content-Type: application/json" in str(request.error)


# KServe v1


def test_v1_reads_every_instance_in_order(digits):
    request = read_json({"instances": [{"data": b64(p)} for p in digits[:3]]})
    assert [np.array_equal(image.pixels, pixels(p)) for image, p in zip(request.images, digits)] == [True] * 3


def test_v1_instances_may_be_28_by_28_pixel_arrays(digits):
    request = read_json({"instances": [pixels(digits[5]).tolist()]})
    assert np.array_equal(request.images[0].pixels, pixels(digits[5]))


def test_v1_names_the_instance_that_is_not_an_image(digits):
    message = error_of({"instances": [{"data": b64(digits[0])}, {"data": "bm90IGFuIGltYWdl"}]})
    assert message.startswith("instance 1: not a decodable image")


def test_v1_instances_must_be_a_non_empty_list():
    assert '"instances" must be a non-empty list' in error_of({"instances": []})


# Open Inference Protocol v2: BYTES


def test_v2_bytes_answers_every_element(digits):
    request = read_json(v2("BYTES", [10], [b64(p) for p in digits]))
    assert len(request.images) == 10
    assert all(np.array_equal(image.pixels, pixels(p)) for image, p in zip(request.images, digits))


def test_v2_bytes_takes_a_shape_of_minus_one_as_every_element(digits):
    assert len(read_json(v2("BYTES", [-1], [b64(digits[0]), b64(digits[1])])).images) == 2


def test_v2_bytes_names_the_input_and_element_that_is_not_base64(digits):
    message = error_of(v2("BYTES", [2], [b64(digits[0]), "not base64!"], name="images"))
    assert message.startswith("input 'images': element 1 is not valid base64")


def test_v2_bytes_names_the_element_that_is_not_an_image(digits):
    assert error_of(v2("BYTES", [1], ["aGVsbG8="])).startswith("input 'input-0': element 0: not a decodable image")


def test_v2_bytes_shape_must_count_its_elements(digits):
    assert "shape [3] does not match its 1 elements" in error_of(v2("BYTES", [3], [b64(digits[0])]))


def test_v2_bytes_shape_must_have_one_dimension(digits):
    assert "BYTES shape must be [N]" in error_of(v2("BYTES", [1, 1], [b64(digits[0])]))


def test_v2_reads_triton_binary_bytes_elements_as_image_files(digits):
    files = [p.read_bytes() for p in digits[:2]]
    binary = b"".join(struct.pack("<I", len(f)) + f for f in files)
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(binary)}}]}
    ).encode()
    request = read({"body": header + binary}, None, {"Inference-Header-Content-Length": str(len(header))})
    assert [np.array_equal(image.pixels, pixels(p)) for image, p in zip(request.images, digits)] == [True, True]


def test_v2_reads_triton_binary_fp32_tensors(digits):
    binary = (pixels(digits[6]) / 255.0).astype("<f4").tobytes()
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}]}
    ).encode()
    request = read({"body": header + binary}, None, {"inference-header-content-length": str(len(header))})
    assert np.array_equal(request.images[0].pixels, pixels(digits[6]))


# Open Inference Protocol v2: FP32 and UINT8 tensors


@pytest.mark.parametrize("shape", [[28, 28], [1, 28, 28], [1, 1, 28, 28]])
def test_v2_fp32_takes_one_image_in_each_documented_shape(digits, shape):
    data = (pixels(digits[3]) / 255.0).reshape(shape).tolist()
    assert np.array_equal(read_json(v2("FP32", shape, data)).images[0].pixels, pixels(digits[3]))


@pytest.mark.parametrize("shape", [[3, 28, 28], [3, 1, 28, 28], [-1, 28, 28]])
def test_v2_uint8_takes_a_batch_of_images_nested_or_flat(digits, shape):
    batch = np.stack([pixels(p) for p in digits[:3]])
    for data in (batch.reshape(3, *shape[1:]).tolist(), batch.flatten().tolist()):
        images = read_json(v2("UINT8", shape, data)).images
        assert [np.array_equal(image.pixels, p) for image, p in zip(images, batch)] == [True] * 3


def test_v2_fp32_above_one_says_to_scale_or_send_uint8(digits):
    message = error_of(v2("FP32", [28, 28], pixels(digits[0]).tolist()))
    assert message == "input 'input-0': FP32 values must be 0..1: scale by 1/255, or send UINT8"


def test_v2_uint8_must_be_whole_numbers(digits):
    assert "UINT8 values must be whole numbers" in error_of(v2("UINT8", [28, 28], np.full((28, 28), 0.5).tolist()))


def test_v2_tensor_shape_must_be_a_batch_of_28_by_28_images():
    message = error_of(v2("FP32", [1, 784], [0.0] * 784))
    assert message.startswith("input 'input-0': shape [1, 784] is not a batch of 28×28 images")


def test_v2_tensor_data_must_fill_its_shape():
    assert "shape [2, 28, 28] needs 1568 values, got 784" in error_of(v2("FP32", [2, 28, 28], [0.0] * 784))


def test_v2_names_an_unsupported_datatype():
    message = error_of(v2("FP64", [28, 28], [0.0] * 784, name="pixels"))
    assert message.startswith("input 'pixels': datatype \"FP64\" is not supported: send BYTES")


def test_v2_names_the_blank_image_of_a_batch(digits):
    batch = np.stack([pixels(digits[0]), np.zeros((28, 28))]).tolist()
    assert error_of(v2("UINT8", [2, 28, 28], batch)).startswith("input 'input-0': image 1: blank image")


def test_v2_takes_exactly_one_input(digits):
    document = v2("BYTES", [1], [b64(digits[0])])
    document["inputs"] *= 2
    assert error_of(document).startswith('"inputs" must hold exactly one input')


def test_v2_refuses_an_output_the_model_does_not_have(digits):
    message = error_of(v2("BYTES", [1], [b64(digits[0])], outputs=[{"name": "logits"}]))
    assert message.startswith('output "logits" is not one of this model\'s: predict, probabilities, flags')


def test_v2_explain_takes_its_own_outputs(digits):
    body = v2("BYTES", [1], [b64(digits[0])], outputs=[{"name": "attributions"}])
    assert read({"body": body}, "application/json", {"explain": "True"}).outputs == ("attributions",)
    assert 'output "attributions" is not one of this model\'s' in error_of(body)


def test_too_many_images_in_one_request_get_413():
    request = read_json(v2("UINT8", [C.MAX_IMAGES_PER_REQUEST + 1, 28, 28], [0] * (C.MAX_IMAGES_PER_REQUEST + 1) * 784))
    assert request.error.status == 413 and request.error.reason == "too_large"


# Answers


def probabilities(*digits: int) -> list[Answer]:
    return [Answer(np.eye(10)[d].tolist()) for d in digits]


def test_a_plain_answer_is_the_kits_json(digits):
    answer = json.loads(protocols.answer(Request("plain", [None]), probabilities(7), "mnist", model_version="1.0"))
    assert answer == {"digit": 7, "confidence": 1.0, "flags": [], "probabilities": np.eye(10)[7].tolist()}


def test_an_answer_holds_its_flags_and_the_digits_of_several():
    several = Answer(np.eye(10)[3].tolist(), ["several_digits"], [3, 8])
    answer = json.loads(protocols.answer(Request("plain", [None]), [several], "mnist", model_version="1.0"))
    assert answer["flags"] == ["several_digits"] and answer["digits"] == [3, 8]


def test_a_v2_answer_gives_each_images_flags_comma_separated():
    flagged = [Answer(np.full(10, 0.1).tolist(), ["not_a_digit", "low_confidence"]), *probabilities(2)]
    answer = json.loads(protocols.answer(Request("v2", [None, None]), flagged, "mnist", model_version="1.0"))
    flags = {o["name"]: o for o in answer["outputs"]}["flags"]
    assert flags == {"name": "flags", "datatype": "BYTES", "shape": [2], "data": ["not_a_digit,low_confidence", ""]}


def test_a_v1_answer_has_one_prediction_per_instance():
    answer = json.loads(
        protocols.answer(Request("v1", [None, None]), probabilities(4, 2), "mnist", model_version="1.0")
    )
    assert [p["digit"] for p in answer["predictions"]] == [4, 2] and answer["predictions"][0]["confidence"] == 1.0


def test_a_v2_answer_echoes_the_id_and_names_the_model_and_its_outputs():
    request = Request("v2", [None, None], id="req-1")
    answer = json.loads(protocols.answer(request, probabilities(3, 9), "mnist", model_version="2.0"))
    assert answer["id"] == "req-1" and answer["model_name"] == "mnist" and answer["model_version"] == "2.0"
    predict, table, _ = answer["outputs"]
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [3, 9]}
    assert table["name"] == "probabilities" and table["datatype"] == "FP32" and table["shape"] == [2, 10]
    assert table["data"] == np.eye(10)[[3, 9]].flatten().tolist()


def test_a_v2_answer_without_an_id_has_none():
    assert "id" not in json.loads(
        protocols.answer(Request("v2", [None]), probabilities(1), "mnist", model_version="1.0")
    )


def test_a_v2_answer_holds_only_the_outputs_asked_for():
    answer = json.loads(
        protocols.answer(Request("v2", [None], outputs=("predict",)), probabilities(1), "m", model_version="1")
    )
    assert [o["name"] for o in answer["outputs"]] == ["predict"]


def test_a_v2_explanation_has_attributions_and_pixels_per_image():
    explained = [{"digit": 5, "pixels": np.zeros((28, 28), int).tolist(), "attributions": np.ones((28, 28)).tolist()}]
    answer = json.loads(protocols.explanation(Request("v2", [None]), explained, "mnist", model_version="1.0"))
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in answer["outputs"]}
    assert shapes == {
        "predict": ("INT64", [1]),
        "attributions": ("FP32", [1, 28, 28]),
        "pixels": ("UINT8", [1, 28, 28]),
    }


def test_a_v1_explanation_lists_one_per_instance():
    explained = [{"digit": 1}, {"digit": 2}]
    assert json.loads(protocols.explanation(Request("v1", [None, None]), explained, "m", model_version="1")) == {
        "explanations": explained
    }


def test_errors_are_the_kits_object_for_plain_requests_and_the_protocols_for_v1_v2():
    assert protocols.error_body("plain", 400, "blank", error_type="BadRequestException") == {
        "code": 400,
        "type": "BadRequestException",
        "message": "blank",
    }
    assert protocols.error_body("v2", 400, "blank", error_type="BadRequestException") == {"error": "blank"}


def test_every_torchserve_envelope_hands_requests_through_once_the_handler_is_loaded():
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    import mnist_handler  # noqa: F401  (loading it makes every envelope a pass-through)

    rows = [{"body": {"instances": []}}, {"body": b"x"}]
    assert KServeEnvelope(lambda data, context: data).handle(rows, None) == rows
