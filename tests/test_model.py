"""The network itself (mnist_model.py): one nn.Module for TorchServe, the tutorial's layer names, its output."""

import inspect

import torch
from torch import nn

import mnist_model
from mnist_model import MnistClassificationNet


def test_module_defines_exactly_one_nn_module_for_torchserve():
    classes = [
        c
        for _, c in inspect.getmembers(mnist_model, inspect.isclass)
        if issubclass(c, nn.Module) and c.__module__ == "mnist_model"
    ]
    assert classes == [MnistClassificationNet]


def test_state_dict_has_the_tutorial_layer_names_and_the_pooled_networks_shapes():
    shapes = {k: tuple(v.shape) for k, v in MnistClassificationNet().state_dict().items()}
    assert shapes == {
        "conv1.weight": (32, 1, 5, 5),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 5, 5),
        "conv2.bias": (64,),
        "fc1.weight": (128, 1024),
        "fc1.bias": (128,),
        "fc2.weight": (10, 128),
        "fc2.bias": (10,),
    }


def test_forward_gives_log_probabilities_of_ten_digits():
    model = MnistClassificationNet().eval()
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)
