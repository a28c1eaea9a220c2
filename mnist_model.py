"""The classifier: a small CNN in LeNet's pattern, with the tutorial's layer names.

TorchServe imports this file from the .mar and instantiates its only nn.Module class,
so it must define exactly one.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MnistClassificationNet(nn.Module):
    """1×28×28 normalised images in, log-probabilities of the ten digits out.

    Two 5×5 convolutions, each followed by 2×2 max pooling, then two fully connected layers. Pooling after the
    first convolution, not only after the second as PyTorch's MNIST example does, gives the second a quarter of
    the positions: about a third of the example's multiply-adds and a fifth of its weights, at the same test
    accuracy, so it trains and serves fast on CPUs without AVX-512 or AMX too (docs/PERFORMANCE.md).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)  # 28 → 24, pooled to 12
        self.conv2 = nn.Conv2d(32, 64, 5)  # 12 → 8, pooled to 4
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(torch.flatten(x, 1))
        x = self.dropout(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def from_state_dict(path, map_location="cpu") -> MnistClassificationNet:
    """The network with the weights of a state_dict file, in eval mode. weights_only: a file's weights are never
    executed as pickle code."""
    model = MnistClassificationNet()
    model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return model.to(map_location).eval()
