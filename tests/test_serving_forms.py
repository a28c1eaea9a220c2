"""The serving form is chosen on the serving CPU: the worker times the forms its archive carries and serves the
fastest (mnist_kit.worker.serving_forms), and a quantised form serves only where it reads the archive's check sample as
well as it should. The choice itself is a pure function of the timings, so the choice another CPU would make is
tested here with that CPU's figures."""

import json
import logging
import sys

import numpy as np
import pytest
import torch

from mnist_kit import constants as C
from mnist_kit.worker import eager_forms, serving_forms
from mnist_model import MnistClassificationNet

# Milliseconds per forward pass, one thread, in process. The eager forms' and the old int8 TorchScript's were
# measured in issue 11 on a 2-core AMD EPYC with AVX2 only (oneDNN's fp32 convolutions at half ATen's speed) and on
# a Xeon with AVX-512 VNNI and AMX (int8 far ahead); the ONNX forms' on an AVX-512 EPYC (issue 28).
EPYC_AVX2 = {"onnx-int8": {1: 0.52, 16: 3.7}, "eager-fp32": {1: 1.4, 16: 9.0}, "eager-fp32-aten": {1: 1.0, 16: 4.6}}
XEON_AMX = {"onnx-int8": {1: 0.10, 16: 0.48}, "eager-fp32": {1: 0.35, 16: 2.5}, "eager-fp32-aten": {1: 0.9, 16: 5.1}}
EPYC_AVX512 = {"onnx-int8": {1: 0.08, 16: 0.69}, "onnx-fp32": {1: 0.10, 16: 1.25}}


def test_the_fastest_form_on_a_full_batch_is_served():
    assert serving_forms.choose(XEON_AMX)[0] == "onnx-int8"


def test_cpus_of_other_kinds_choose_other_forms_for_the_reason_they_state():
    timings = {**EPYC_AVX2, "onnx-int8": {1: 0.52, 16: 5.7}}
    form, why = serving_forms.choose(timings)
    assert form == "eager-fp32-aten" and why.startswith("fastest at batch 16 on this CPU")
    assert serving_forms.choose(XEON_AMX)[0] != form


def test_the_reason_lists_every_form_fastest_first():
    form, why = serving_forms.choose(EPYC_AVX512)
    assert form == "onnx-int8" and why == "fastest at batch 16 on this CPU (ms: onnx-int8 0.69, onnx-fp32 1.25)"


def test_a_form_within_5_percent_on_a_full_batch_and_faster_on_one_image_wins():
    timings = {"onnx-int8": {1: 0.9, 16: 4.0}, "eager-fp32-aten": {1: 0.5, 16: 4.1}}
    form, why = serving_forms.choose(timings)
    assert form == "eager-fp32-aten" and "faster on one image" in why


def test_a_forced_form_is_served_whatever_the_timings():
    form, why = serving_forms.choose(XEON_AMX, forced="eager-fp32-aten")
    assert form == "eager-fp32-aten" and why.startswith("forced by configuration")


def test_forcing_a_form_not_loaded_names_the_forms_that_are():
    with pytest.raises(ValueError, match="'onnx-int8' asked for, but this server loaded onnx-fp32, eager-fp32"):
        serving_forms.choose({"onnx-fp32": {}, "eager-fp32": {}}, forced="onnx-int8")


def test_auto_means_no_forcing():
    assert serving_forms.choose(XEON_AMX, forced="auto")[0] == "onnx-int8"


def test_measure_times_each_form_at_each_batch_size_within_its_budget():
    model = MnistClassificationNet().eval()
    candidates = {name: eager_forms.EagerForm(build(model)) for name, build in eager_forms.BUILDERS.items()}
    timings = serving_forms.measure(candidates, (1, 4), budget_s=0.05)
    assert set(timings) == {"eager-fp32", "eager-fp32-aten"}
    assert all(set(t) == {1, 4} and all(ms > 0 for ms in t.values()) for t in timings.values())


def test_the_aten_form_computes_what_the_float_model_computes_and_leaves_onednn_on():
    model = MnistClassificationNet().eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(eager_forms.WithoutOneDNN(model)(x), model(x), atol=1e-5)
    assert torch.backends.mkldnn.enabled


def test_the_channels_last_form_computes_what_the_float_model_computes_and_leaves_it_as_it_was():
    model = MnistClassificationNet().eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(eager_forms.channels_last(model)(x), model(x), atol=1e-5)
    assert model.conv1.weight.is_contiguous()


def test_an_eager_form_takes_and_gives_numpy():
    out = eager_forms.EagerForm(MnistClassificationNet().eval())(np.zeros((3, 1, 28, 28), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (3, 10) and out.dtype == np.float32


class Constant:
    """A form that answers `digit` for every image."""

    def __init__(self, digit: int):
        self.digit = digit

    def __call__(self, x):
        out = np.full((len(x), 10), -10.0, np.float32)
        out[:, self.digit] = 0
        return out


def sample(tmp_path, labels, float_correct: int) -> dict:
    """A check sample of blank images with these labels, and the manifest's part that names it."""
    np.savez_compressed(tmp_path / C.CHECK_FILE, images=np.zeros((len(labels), 28, 28), np.uint8), labels=labels)
    check = {"file": C.CHECK_FILE, "images": len(labels), "float_correct": float_correct}
    return {"max_accuracy_drop": 0.05, "check": check}


def test_a_quantised_form_that_reads_the_check_sample_as_the_float_model_did_serves(tmp_path):
    manifest = sample(tmp_path, np.array([3] * 99 + [4]), float_correct=99)
    assert serving_forms.check(Constant(3), {"quantized": True}, manifest, model_dir=str(tmp_path)) is None


def test_a_quantised_form_more_than_the_allowed_drop_below_float_on_the_check_sample_is_refused(tmp_path):
    manifest = sample(tmp_path, np.array([3] * 90 + [4] * 10), float_correct=90)
    refusal = serving_forms.check(Constant(4), {"quantized": True}, manifest, model_dir=str(tmp_path))
    assert refusal == (
        "it reads 10 of the 100 check images right, against the float model's 90 (at most 0.05 points below are "
        "allowed)"
    )


def test_float_forms_are_not_checked(tmp_path):
    manifest = sample(tmp_path, np.array([3] * 100), float_correct=100)
    assert serving_forms.check(Constant(4), {}, manifest, model_dir=str(tmp_path)) is None


def test_a_refused_int8_form_alone_leaves_the_float_network_to_serve_with_log_lines_that_say_why(
    untrained_checkpoint, tmp_path, caplog
):
    from mnist_kit.packaging import optimize

    model = optimize.load_float(untrained_checkpoint)
    optimize.export_onnx(model, tmp_path / "int8.onnx")  # reads blank images as the float model does
    blank = optimize.float_form(model)(np.zeros((1, 1, 28, 28), np.float32)).argmax(1)[0]
    manifest = sample(tmp_path, np.full(10, (blank + 1) % 10), float_correct=10)
    manifest["forms"] = {"onnx-int8": {"file": "int8.onnx", "runtime": "onnxruntime", "quantized": True}}
    (tmp_path / C.FORMS_FILE).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        loaded = serving_forms.load(str(tmp_path), str(untrained_checkpoint))
    assert set(loaded) == {"eager-fp32"}  # as a --mode int8 archive on a CPU that reads its int8 form wrong
    assert "serving form onnx-int8 refused on this CPU: it reads 0 of the 10 check images right" in caplog.text
    assert "no ONNX form loaded: serving the float network with PyTorch (eager-fp32)" in caplog.text


def test_without_torch_a_worker_loads_only_the_onnx_forms(model_store, tmp_path):
    from mnist_kit.packaging import mar

    folder = mar.read(model_store / "mnist.mar").extract(tmp_path)
    loaded = serving_forms.load(str(folder), str(folder / "mnist_sd.pt"), with_torch=False)
    assert set(loaded) == {"onnx-int8", "onnx-fp32"}


def test_without_onnxruntime_a_worker_serves_the_float_network_and_says_why(model_store, tmp_path, caplog, monkeypatch):
    """As in KServe's stock TorchServe image, which has no onnxruntime."""
    from mnist_kit.packaging import mar

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    folder = mar.read(model_store / "mnist.mar").extract(tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = serving_forms.load(str(folder), str(folder / "mnist_sd.pt"), with_torch=False)
    assert set(loaded) == {"eager-fp32", "eager-fp32-aten"}
    assert "serving form onnx-int8 not loaded: onnxruntime is not installed" in caplog.text
    assert "no ONNX form loaded: serving the float network with PyTorch" in caplog.text


def test_a_forced_eager_form_loads_beside_the_onnx_forms_of_a_torch_free_worker(model_store, tmp_path):
    from mnist_kit.packaging import mar

    folder = mar.read(model_store / "mnist.mar").extract(tmp_path)
    loaded = serving_forms.load(str(folder), str(folder / "mnist_sd.pt"), with_torch=False, forced="eager-fp32")
    assert set(loaded) == set(C.SERVING_FORMS)
