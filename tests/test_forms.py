"""The serving form is chosen on the serving CPU: the worker times the forms its archive carries and serves the
fastest (mnist_kit.worker.forms). The choice itself is a pure function of the timings, so the choice another CPU
would make is tested here with that CPU's figures."""

import pytest
import torch

from mnist_kit.worker import forms
from mnist_model import MnistClassificationNet

# Milliseconds per forward pass of the example CNN, one thread, measured in process (issue 11): on a 2-core AMD
# EPYC with AVX2 only, oneDNN's fp32 convolutions run at half ATen's speed; on a Xeon with AVX-512 VNNI and AMX,
# int8 is far ahead.
EPYC_AVX2 = {"int8": {1: 0.52, 16: 3.7}, "fp32": {1: 1.4, 16: 9.0}, "fp32-aten": {1: 1.0, 16: 4.6}}
XEON_AMX = {"int8": {1: 0.10, 16: 0.48}, "fp32": {1: 0.35, 16: 2.5}, "fp32-aten": {1: 0.9, 16: 5.1}}
# The current network on the same EPYC (issue 11, stop 16; forms.measure in one quiet process, the forms of one
# archive): int8 is fastest on a full batch there.
EPYC_AVX2_CURRENT = {"int8": {1: 0.48, 16: 2.00}, "fp32": {1: 0.97, 16: 3.06}, "fp32-aten": {1: 0.58, 16: 3.92}}


def test_the_fastest_form_on_a_full_batch_is_served():
    assert forms.choose(XEON_AMX)[0] == "int8"


def test_cpus_of_other_kinds_choose_other_forms_for_the_reason_they_state():
    timings = {**EPYC_AVX2, "int8": {1: 0.52, 16: 5.7}}
    form, why = forms.choose(timings)
    assert form == "fp32-aten" and why.startswith("fastest at batch 16 on this CPU")
    assert forms.choose(XEON_AMX)[0] != form


def test_the_avx2_epyc_serves_the_current_network_in_int8():
    form, why = forms.choose(EPYC_AVX2_CURRENT)
    assert form == "int8" and why == "fastest at batch 16 on this CPU (ms: int8 2.00, fp32 3.06, fp32-aten 3.92)"


def test_a_form_within_5_percent_on_a_full_batch_and_faster_on_one_image_wins():
    timings = {"int8": {1: 0.9, 16: 4.0}, "fp32-aten": {1: 0.5, 16: 4.1}}
    form, why = forms.choose(timings)
    assert form == "fp32-aten" and "faster on one image" in why


def test_a_forced_form_is_served_whatever_the_timings():
    form, why = forms.choose(XEON_AMX, forced="fp32-aten")
    assert form == "fp32-aten" and why.startswith("forced by configuration")


def test_forcing_a_form_the_archive_lacks_names_the_forms_it_has():
    with pytest.raises(ValueError, match="'int8' asked for, but this archive has fp32, fp32-aten"):
        forms.choose({"fp32": {}, "fp32-aten": {}}, forced="int8")


def test_auto_means_no_forcing():
    assert forms.choose(XEON_AMX, forced="auto")[0] == "int8"


def test_measure_times_each_form_at_each_batch_size_within_its_budget():
    model = MnistClassificationNet().eval()
    timings = forms.measure({"fp32": model, "fp32-aten": forms.WithoutOneDNN(model)}, (1, 4), budget_s=0.05)
    assert set(timings) == {"fp32", "fp32-aten"}
    assert all(set(t) == {1, 4} and all(ms > 0 for ms in t.values()) for t in timings.values())


def test_the_aten_form_computes_what_the_float_model_computes_and_leaves_onednn_on():
    model = MnistClassificationNet().eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(forms.WithoutOneDNN(model)(x), model(x), atol=1e-5)
    assert torch.backends.mkldnn.enabled


def test_the_channels_last_form_computes_what_the_float_model_computes_and_leaves_it_as_it_was():
    model = MnistClassificationNet().eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(forms.channels_last(model)(x), model(x), atol=1e-5)
    assert model.conv1.weight.is_contiguous()
