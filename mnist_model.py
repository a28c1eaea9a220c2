"""The classifier: the CNN of PyTorch's MNIST example, with the tutorial's layer names.

TorchServe imports this file from the .mar and instantiates its only nn.Module class,
so it must define exactly one.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MnistClassificationNet(nn.Module):
    """1×28×28 normalised images in, log-probabilities of the ten digits out."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def from_state_dict(path, map_location="cpu") -> MnistClassificationNet:
    """The network with the weights of a state_dict file, in eval mode. weights_only: a file's weights are never
    executed as pickle code."""
    model = MnistClassificationNet()
    model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return model.to(map_location).eval()
