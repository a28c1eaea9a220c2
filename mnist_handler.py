"""TorchServe handler: image requests in, {"digit", "confidence", "probabilities"} per request out.

Thin on purpose: decoding and normalisation live in mnist_preprocess, the network in mnist_model.
"""

import numpy as np
import torch
from ts.torch_handler.image_classifier import ImageClassifier

import mnist_preprocess
from mnist_model import MnistClassificationNet


class MnistHandler(ImageClassifier):
    def initialize(self, context):
        # One intra-op thread per worker: with one worker per core, larger pools fight over the cores.
        torch.set_num_threads(1)
        super().initialize(context)

    def _load_pickled_model(self, model_dir, model_file, model_pt_path):
        """The base class's loader, but with weights_only=True: a .mar's weights are never executed as pickle code."""
        model = MnistClassificationNet()
        model.load_state_dict(torch.load(model_pt_path, map_location=self.device, weights_only=True))
        return model

    def preprocess(self, data):
        pixels = np.stack([mnist_preprocess.request_to_pixels(row) for row in data])
        return mnist_preprocess.normalize(torch.from_numpy(pixels)).to(self.device)

    def postprocess(self, data):
        probabilities = data.exp()
        confidence, digit = probabilities.max(dim=1)
        return [
            {"digit": d, "confidence": c, "probabilities": p}
            for d, c, p in zip(digit.tolist(), confidence.tolist(), probabilities.tolist())
        ]
