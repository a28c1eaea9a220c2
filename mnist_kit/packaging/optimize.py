"""The served forms of the model, built and checked when archiving (mnist_kit.worker.serving_forms serves them).

ONNX through torch.export (torch.onnx.export with dynamo=True), run by ONNX Runtime: fp32, and int8 by ONNX
Runtime's static QDQ quantisation (per-channel int8 weights, uint8 activations, min-max calibrated on training
images). The eager forms are the float state_dict itself. Every form is kept only if its MNIST test accuracy stays
within the allowed drop of the float model's; which one serves is measured on the serving CPU, figures in
docs/PERFORMANCE.md.
"""

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from mnist_kit import constants as C
from mnist_kit.training.mnist import normalize_tensor
from mnist_kit.worker import eager_forms, serving_forms
from mnist_model import MnistClassificationNet, from_state_dict


def load_float(state_dict_path) -> MnistClassificationNet:
    return from_state_dict(state_dict_path)


def export_onnx(model: MnistClassificationNet, path: Path) -> Path:
    """The float network as ONNX with a dynamic batch dimension, through torch.export. The exporter logs a line for
    each of torchvision's operators when torchvision is not installed (the kit needs none of them): that logger
    alone says only errors while it runs."""
    example = torch.zeros(2, 1, C.IMAGE_SIZE, C.IMAGE_SIZE)
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            model.eval(),
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=[C.ONNX_INPUT],
            output_names=[C.ONNX_OUTPUT],
            verbose=False,
        )
    finally:
        registration.setLevel(level)
    program.save(str(path))
    return path


class Calibration(CalibrationDataReader):
    """ONNX Runtime's calibration reader: the calibration images, normalised, 250 at a time."""

    def __init__(self, images: torch.Tensor):
        self.batches = iter([normalize_tensor(images[i : i + 250]).numpy() for i in range(0, len(images), 250)])

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {C.ONNX_INPUT: batch}


def quantize_int8(fp32_path: Path, path: Path, calibration: torch.Tensor) -> Path:
    """Static int8 QDQ quantisation of the fp32 ONNX file, calibrated on uint8 images."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp, "prepared.onnx")
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return path


def candidate_forms(model: MnistClassificationNet, calibration: torch.Tensor, folder: Path, *, names) -> dict:
    """The serving forms `names` (of C.SERVING_FORMS), by name: (the form, as the worker runs it; its manifest
    entry). ONNX files are written to folder."""
    candidates = {}
    fp32_path = folder / "fp32.onnx"
    if {"onnx-fp32", "onnx-int8"} & set(names):
        export_onnx(model, fp32_path)
    if "onnx-fp32" in names:
        candidates["onnx-fp32"] = (
            serving_forms.OnnxForm(str(fp32_path)),
            {"file": fp32_path.name, "runtime": "onnxruntime"},
        )
    if "onnx-int8" in names:
        path = quantize_int8(fp32_path, folder / "int8.onnx", calibration)
        entry = {"file": path.name, "runtime": "onnxruntime", "quantized": True}
        candidates["onnx-int8"] = (serving_forms.OnnxForm(str(path)), entry)
    for name in ("eager-fp32", "eager-fp32-aten"):
        if name in names:
            form = eager_forms.EagerForm(eager_forms.BUILDERS[name](model))
            candidates[name] = (form, {"runtime": "torch"})
    return candidates


def correct(form, images: torch.Tensor, labels: torch.Tensor) -> int:
    """How many of the uint8 images `form` (a serving form: NumPy in, NumPy out) reads right."""
    return sum(
        int((form(normalize_tensor(images[i : i + 500]).numpy()).argmax(1) == labels[i : i + 500].numpy()).sum())
        for i in range(0, len(images), 500)
    )


def accuracy(form, images: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * correct(form, images, labels) / len(images)


def float_form(model: MnistClassificationNet) -> eager_forms.EagerForm:
    """The float network as a serving form: what every other form is measured against."""
    return eager_forms.EagerForm(model)


def check_sample(float_form, images: torch.Tensor, labels: torch.Tensor, *, path: Path, size=C.CHECK_IMAGES) -> dict:
    """The labelled sample each worker reads its quantised forms on (serving_forms.check): `size` test images, seeded,
    written to path; its forms.json entry, with how many of them the float model reads right."""
    pick = torch.from_numpy(np.random.default_rng(C.SEED).choice(len(images), size, replace=False))
    np.savez_compressed(path, images=images[pick].numpy(), labels=labels[pick].numpy())
    return {"file": path.name, "images": size, "float_correct": correct(float_form, images[pick], labels[pick])}
