"""Serving forms: the same network in the forms an archive carries, and the choice of one on the serving CPU.

The forms: int8 TorchScript (FBGEMM/oneDNN kernels, x86 engine), `fp32` (the float network channels-last, on
oneDNN's convolutions) and `fp32-aten` (the float network on ATen's own convolutions, oneDNN off).

Which form is fastest depends on the CPU, not on the model: on AVX2-only CPUs oneDNN's fp32 convolutions
run at about half the speed of ATen's own (im2col and a BLAS GEMM), where AVX-512 VNNI and AMX make int8 and
oneDNN far ahead. A choice measured on the machine that built the archive is wrong on another, so the worker
times every form it can load, on its own CPU, at start, and serves the fastest. Every form was checked
against the float model's test accuracy when the archive was built (mnist_kit.packaging.archive).
"""

import copy
import json
import logging
import os
import time
import warnings

import torch

from mnist_kit import constants as C

log = logging.getLogger(__name__)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the float network with channels-last weights, so its activations are channels-last too: oneDNN's
    convolutions prefer them, and ATen's max pooling of NCHW tensors ran 50 times slower than of channels-last
    ones on the AVX2 EPYC. The original stays as it is for explanations, which need its gradients."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last).eval()


class WithoutOneDNN(torch.nn.Module):
    """The float network on ATen's convolutions: oneDNN off for this module's calls only."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not torch.backends.mkldnn.flags(): it also sets oneDNN's TF32 flag, which warns on every call.
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return self.model(x)
        finally:
            torch.backends.mkldnn.enabled = enabled


def load(model_dir: str, float_model: torch.nn.Module | None, device) -> dict:
    """The forms listed in the archive's forms.json that load here, by name; a form that fails to load (no
    x86 quantisation engine on an ARM CPU, say) is left out with a log line, not an error."""
    listed = read_manifest(model_dir)
    forms = {}
    for name in listed:
        try:
            if name == "int8":
                forms[name] = load_torchscript(os.path.join(model_dir, listed[name]["file"]), device)
            elif name == "fp32" and float_model is not None:
                forms[name] = channels_last(float_model)
            elif name == "fp32-aten" and float_model is not None:
                forms[name] = WithoutOneDNN(float_model)
        except Exception as e:  # a form this CPU cannot run is not a reason to fail the worker
            log.warning("serving form %s not loaded: %s: %s", name, type(e).__name__, e)
    return forms


def read_manifest(model_dir: str) -> dict:
    """forms.json: each form's file and checked accuracy, written by `mnist-kit archive --mode auto`."""
    path = os.path.join(model_dir, C.FORMS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)["forms"]


def load_torchscript(path: str, device) -> torch.jit.ScriptModule:
    """TorchScript is deprecated in torch 2.14 and says so on every load; the int8 form still needs it (its
    quantised kernels have no torch.export path that runs without compiling), so the warning is kept out of
    every worker's log."""
    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"  # what int8 archives were quantised for
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path, map_location=device).eval()


@torch.inference_mode()
def measure(forms: dict, batch_sizes=(1, C.BATCH_SIZE), budget_s: float = C.FORM_TIMING_BUDGET_S) -> dict:
    """Median milliseconds per forward pass of each form at each batch size, on this process's threads.

    Round-robin over the forms, so that a machine whose speed drifts treats them alike; stops after
    `budget_s` (at least three rounds), which keeps worker start-up bounded."""
    inputs = {n: torch.zeros(n, 1, C.IMAGE_SIZE, C.IMAGE_SIZE) for n in batch_sizes}
    for model in forms.values():
        for x in inputs.values():
            model(x)  # first calls pick kernels and allocate: not timed
    samples = {name: {n: [] for n in batch_sizes} for name in forms}
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 3 or (time.perf_counter() < deadline and rounds < 50):
        for name, model in forms.items():
            for n, x in inputs.items():
                start = time.perf_counter()
                model(x)
                samples[name][n].append((time.perf_counter() - start) * 1000)
        rounds += 1
    return {name: {n: sorted(t)[len(t) // 2] for n, t in per_size.items()} for name, per_size in samples.items()}


def choose(timings: dict, forced: str | None = None) -> tuple[str, str]:
    """The form to serve and why. Fastest on a full batch, what bounds throughput under load; a form within
    5 % of it that is faster on a single image wins instead, since lone requests wait on that figure.

    timings: {form: {batch size: ms}}, as measure() returns; forced: a form name from the archive's
    configuration or MNIST_KIT_SERVING_FORM, used whatever the timings say."""
    if forced and forced != "auto":
        if forced not in timings:
            raise ValueError(f"serving form {forced!r} asked for, but this archive has {', '.join(timings) or 'none'}")
        return forced, f"forced by configuration ({C.SERVING_FORM_ENV} or the archive's serving_form)"
    if len(timings) == 1:
        (name,) = timings
        return name, "the only form in this archive"
    full = max(next(iter(timings.values())))
    fastest = min(timings, key=lambda f: timings[f][full])
    close = [f for f in timings if timings[f][full] <= 1.05 * timings[fastest][full]]
    single = min(timings[fastest])
    best = min(close, key=lambda f: timings[f][single])
    summary = ", ".join(f"{f} {t[full]:.2f}" for f, t in sorted(timings.items(), key=lambda kv: kv[1][full]))
    why = f"fastest at batch {full} on this CPU (ms: {summary})"
    if best != fastest:
        why = f"within 5 % of {fastest} at batch {full} and faster on one image (ms: {summary})"
    return best, why
