"""Serving forms: the same network in the forms an archive carries, and the choice of one on the serving CPU.

The forms (C.SERVING_FORMS): `onnx-int8` and `onnx-fp32`, the network exported through torch.export to ONNX and run
by ONNX Runtime (int8: its static QDQ quantisation, calibrated on training images); `eager-fp32` and
`eager-fp32-aten`, the float network in PyTorch (eager_forms.py). ONNX forms need onnxruntime and no torch, so a
server that serves one imports no torch; eager forms need torch, and are loaded where the runtime has it anyway
(TorchServe's worker) or where no ONNX form loads (no onnxruntime: KServe's stock TorchServe image).

Which form is fastest depends on the CPU, not on the model, so the worker times every form it loads, on its own CPU,
at start, and serves the fastest. An int8 form's accuracy can depend on the CPU too (ONNX Runtime's u8s8 kernels
can saturate on CPUs without VNNI), so each quantised form is checked at load on a labelled sample packed in the
archive, and refused with a log line where it reads more than the archive's allowed drop below the float model.
"""

import json
import logging
import os
import time

import numpy as np

from mnist_kit import constants as C

log = logging.getLogger(__name__)


class OnnxForm:
    """An ONNX file run by ONNX Runtime on one thread (one worker per core): normalised float32 N×1×28×28 in,
    log-probabilities N×10 out."""

    def __init__(self, path: str):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its notes on graph rewrites are not a worker's business
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


def read_manifest(model_dir: str) -> dict:
    """forms.json: each form's file, runtime and checked accuracy, and the check sample; written by `mnist-kit
    archive`. Empty for an archive without it (--mode eager)."""
    path = os.path.join(model_dir, C.FORMS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load(model_dir: str, weights: str, *, with_torch: bool = True, forced: str | None = None, device="cpu") -> dict:
    """The forms of the archive in model_dir that load and pass their check here, by name. ONNX forms always; eager
    forms where `with_torch`, where one is `forced`, or where no ONNX form loaded (then with a log line saying why:
    the float network from the state_dict, whatever the archive lists). A form that fails to load or to pass its
    check is left out with a log line, not an error."""
    manifest = read_manifest(model_dir)
    listed = manifest.get("forms", {"eager-fp32": {"runtime": "torch"}})  # --mode eager: the state_dict alone
    forms = {}
    for name, entry in listed.items():
        if entry.get("runtime") != "onnxruntime":
            continue
        try:
            form = OnnxForm(os.path.join(model_dir, entry["file"]))
        except ImportError:
            log.warning("serving form %s not loaded: onnxruntime is not installed (pip install onnxruntime)", name)
            continue
        except Exception as e:  # a form this machine cannot run is not a reason to fail the worker
            log.warning("serving form %s not loaded: %s: %s", name, type(e).__name__, e)
            continue
        refusal = check(form, entry, manifest, model_dir=model_dir)
        if refusal:
            log.warning("serving form %s refused on this CPU: %s", name, refusal)
        else:
            forms[name] = form
    unknown = [name for name, entry in listed.items() if entry.get("runtime") not in ("onnxruntime", "torch")]
    if unknown:
        log.warning("serving forms %s not loaded: an older mnist-kit's (TorchScript); archive again", unknown)
    # Every archive carries the float state_dict: where nothing else serves, it does.
    eager = [name for name, entry in listed.items() if entry.get("runtime") == "torch"] or ["eager-fp32"]
    if with_torch or forced in eager or not forms:
        if not forms:
            log.warning("no ONNX form loaded: serving the float network with PyTorch (%s)", ", ".join(eager))
        from mnist_kit.worker import eager_forms

        forms.update(eager_forms.load(eager, weights, device))
    return forms


def check(form, entry: dict, manifest: dict, *, model_dir: str) -> str | None:
    """Why a quantised form may not serve on this CPU, or None: it reads the archive's labelled sample more than the
    allowed drop below the float model (read when archiving). The sample's size bounds what it can see: at least one
    image of slack."""
    sample = manifest.get("check")
    if not entry.get("quantized") or not sample:
        return None
    with np.load(os.path.join(model_dir, sample["file"])) as data:
        images, labels = data["images"], data["labels"]
    from mnist_kit.worker.preprocess import normalize

    correct = sum(
        int((form(normalize(images[i : i + 250])).argmax(1) == labels[i : i + 250]).sum())
        for i in range(0, len(images), 250)
    )
    allowed = max(manifest["max_accuracy_drop"] * len(images) / 100, 1)
    if sample["float_correct"] - correct > allowed:
        return (
            f"it reads {correct} of the {len(images)} check images right, against the float model's "
            f"{sample['float_correct']} (at most {manifest['max_accuracy_drop']} points below are allowed)"
        )
    return None


def measure(forms: dict, batch_sizes=(1, C.BATCH_SIZE), budget_s: float = C.FORM_TIMING_BUDGET_S) -> dict:
    """Median milliseconds per forward pass of each form at each batch size, on this process's threads.

    Round-robin over the forms, so that a machine whose speed drifts treats them alike; stops after
    `budget_s` (at least three rounds), which keeps worker start-up bounded."""
    inputs = {n: np.zeros((n, 1, C.IMAGE_SIZE, C.IMAGE_SIZE), dtype=np.float32) for n in batch_sizes}
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
            raise ValueError(
                f"serving form {forced!r} asked for, but this server loaded {', '.join(timings) or 'none'}"
            )
        return forced, f"forced by configuration ({C.SERVING_FORM_ENV} or the archive's serving_form)"
    if len(timings) == 1:
        (name,) = timings
        return name, "the only form loaded"
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
