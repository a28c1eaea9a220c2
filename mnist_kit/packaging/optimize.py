"""The served forms of the model, built and checked when archiving: the float network with and without oneDNN,
int8 TorchScript, and fp32 TorchScript (--mode script).

int8 is static post-training quantisation (FX graph mode, x86 backend: FBGEMM/oneDNN with VNNI), calibrated
on training images and frozen into TorchScript. Every form is kept only if its MNIST test accuracy stays within
C.MAX_ACCURACY_DROP points of the float model's; which one serves is measured on the serving CPU
(mnist_kit.worker.forms), figures in docs/PERFORMANCE.md.
"""

import copy
import warnings

import torch

from mnist_kit.worker.forms import WithoutOneDNN, channels_last
from mnist_kit.worker.preprocess import normalize
from mnist_model import MnistClassificationNet, from_state_dict


def load_float(state_dict_path) -> MnistClassificationNet:
    return from_state_dict(state_dict_path)


def script(model: MnistClassificationNet) -> torch.jit.ScriptModule:
    with torch.inference_mode():
        return torch.jit.freeze(torch.jit.script(copy.deepcopy(model).eval()))


def candidate_forms(model: MnistClassificationNet, calibration: torch.Tensor) -> dict:
    """Every serving form of mnist_kit.worker.forms, by name, to be checked against float accuracy and packed."""
    forms = {"fp32": channels_last(model), "fp32-aten": WithoutOneDNN(model)}
    try:
        forms["int8"] = quantize_int8(model, calibration)
    except RuntimeError as e:  # no x86 quantisation engine (an ARM CPU): the float forms still serve
        warnings.warn(f"no int8 form: {e}", stacklevel=2)
    return forms


def quantize_int8(model: MnistClassificationNet, calibration: torch.Tensor) -> torch.jit.ScriptModule:
    """Static int8 quantisation calibrated on uint8 images; returns frozen TorchScript."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = normalize(calibration[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (example,))
        with torch.inference_mode():
            for i in range(0, len(calibration), 250):
                prepared(normalize(calibration[i : i + 250]))
            quantized = convert_fx(prepared)
            return torch.jit.freeze(torch.jit.trace(quantized, example))


@torch.inference_mode()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = sum(
        (model(normalize(images[i : i + 500])).argmax(1) == labels[i : i + 500]).sum().item()
        for i in range(0, len(images), 500)
    )
    return 100.0 * correct / len(images)
