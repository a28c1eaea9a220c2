"""The float network in PyTorch, as serving forms (forms.py) and for explanations: the only worker module that imports
torch, and only where a runtime loads it (TorchServe's worker, a server without onnxruntime, an explanation).

`eager-fp32` runs the network channels-last on oneDNN's convolutions; `eager-fp32-aten` on ATen's own (im2col and a
BLAS GEMM), which ran faster than oneDNN's fp32 on an AVX2-only EPYC (docs/PERFORMANCE.md).
"""

import copy

import numpy as np
import torch

from mnist_model import from_state_dict


def float_model(weights: str, device="cpu") -> torch.nn.Module:
    """The network with the archive's float weights, in eval mode; one intra-op thread, as every worker runs (with
    one worker per core, larger pools fight over the cores)."""
    torch.set_num_threads(1)
    try:
        return from_state_dict(weights, device)
    except Exception as e:
        raise RuntimeError(
            f"{weights} is not a state_dict of MnistClassificationNet ({type(e).__name__}); an archive from an older "
            "mnist-kit may hold TorchScript, which this one no longer serves: archive it again with mnist-kit archive"
        ) from None


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


class EagerForm:
    """A PyTorch module as a serving form: normalised float32 N×1×28×28 (NumPy) in, log-probabilities N×10 out."""

    def __init__(self, module: torch.nn.Module, device="cpu"):
        self.module, self.device = module, torch.device(device)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


BUILDERS = {"eager-fp32": channels_last, "eager-fp32-aten": WithoutOneDNN}


def load(names: list[str], weights: str, device="cpu") -> dict:
    """The eager forms `names` of the float weights, by name."""
    model = float_model(weights, device)
    return {name: EagerForm(BUILDERS[name](model), device) for name in names if name in BUILDERS}
