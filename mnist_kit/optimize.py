"""The served forms of the model: TorchScript (fp32) and int8 TorchScript, checked against float eager.

int8 is static post-training quantisation (FX graph mode, x86 backend: FBGEMM/oneDNN with VNNI), calibrated
on training images and frozen into TorchScript; it is kept only if MNIST test accuracy stays within
MAX_ACCURACY_DROP points of the float model. Measured on 2 CPU cores, one thread, batch 16: eager 4.9 ms,
frozen fp32 TorchScript 2.5 ms, int8 TorchScript 0.50 ms (see docs/PERFORMANCE.md).
"""

import copy
import warnings

import torch
import torch.nn.functional as F

from mnist_kit.worker.forms import WithoutOneDNN
from mnist_kit.worker.preprocess import normalize
from mnist_model import MnistClassificationNet, from_state_dict

MAX_ACCURACY_DROP = 0.05


def load_float(state_dict_path) -> MnistClassificationNet:
    return from_state_dict(state_dict_path)


def script(model: MnistClassificationNet) -> torch.jit.ScriptModule:
    with torch.inference_mode():
        return torch.jit.freeze(torch.jit.script(copy.deepcopy(model).eval()))


class ChannelsLastFlatten(MnistClassificationNet):
    """The same network, flattening the pooled features in (height, width, channel) order, with fc1's input
    columns permuted to match. Quantised convolutions return channels-last tensors, which then flatten without
    a copy: the copy cost as much as fc1 itself. The outputs are the float model's, up to rounding."""

    def __init__(self, model: MnistClassificationNet):
        super().__init__()
        self.load_state_dict(model.state_dict())
        channels = self.conv2.out_channels
        side = round((self.fc1.in_features // channels) ** 0.5)
        with torch.no_grad():
            columns = self.fc1.weight.view(-1, channels, side, side).permute(0, 2, 3, 1)
            self.fc1.weight.copy_(columns.reshape(self.fc1.weight.shape))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(x.permute(0, 2, 3, 1), 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def candidate_forms(model: MnistClassificationNet, calibration: torch.Tensor) -> dict:
    """Every serving form of mnist_kit.worker.forms, by name, to be checked against float accuracy and packed."""
    forms = {"fp32": model, "fp32-aten": WithoutOneDNN(model)}
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
        prepared = prepare_fx(ChannelsLastFlatten(model), get_default_qconfig_mapping("x86"), (example,))
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
