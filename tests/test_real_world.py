"""Accuracy on images shaped the way people send digits (mnist_kit.variants), with the default training recipe."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_kit import client as mnist_client
from mnist_kit import constants as C
from mnist_kit import data as mnist_data
from mnist_kit import evaluate as mnist_evaluate
from mnist_kit import variants as mnist_variants
from mnist_kit.worker import preprocess as mnist_preprocess
from mnist_model import MnistClassificationNet

PER_KIND = 200


def load(checkpoint) -> MnistClassificationNet:
    model = MnistClassificationNet().eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return model


@torch.inference_mode()
def predict(model, images: list[bytes]) -> list[int]:
    pixels = np.stack([mnist_preprocess.image_bytes_to_pixels(data) for data in images])
    return model(mnist_preprocess.normalize(torch.from_numpy(pixels))).argmax(1).tolist()


@pytest.fixture(scope="module")
def variants(data_dir):
    images, labels = mnist_data.load(data_dir, "test", download=False)
    return mnist_variants.make(images.numpy(), labels.numpy(), per_kind=PER_KIND, seed=0)


# Accuracy in percent each kind must reach. New kinds (issue 9): 97 %. The others: what the default model read
# before them, less one image of 200 (one of 10 000 for mnist), since the default recipe gives a slightly different
# model on each CPU kind (Xeon: lowres 99.0, printed 97.5; EPYC: 98.5, 99.0). That the preprocessing itself costs
# them nothing was measured side by side, old and new, on one model (issue 9's note).
TARGETS = {
    "mnist": 99.3,
    "canvas": 98.5,
    "photo": 99.0,
    "lowres": 98.0,
    "printed": 97.0,
    "tight": 97.0,
    "lowres_fill": 97.0,
    "offcentre": 97.0,
}


@pytest.fixture(scope="module")
def accuracy_by_kind(trained_checkpoint, data_dir) -> dict[str, float]:
    images, labels = mnist_data.load(data_dir, "test", download=False)
    results = mnist_evaluate.real_world(trained_checkpoint, images, labels, per_kind=PER_KIND, seed=0)
    return {kind: r["accuracy"] for kind, r in results.items()}


@pytest.mark.parametrize("kind", mnist_variants.KINDS)
def test_each_real_world_kind_reaches_its_target(accuracy_by_kind, kind):
    assert accuracy_by_kind[kind] >= TARGETS[kind], accuracy_by_kind


def test_every_variant_kind_decodes_to_the_format_it_claims(variants):
    formats = {kind: set() for kind in mnist_variants.KINDS}
    for kind, _, data in variants:
        formats[kind].add(Image.open(io.BytesIO(data)).format)
    assert formats["photo"] == {"JPEG"}
    assert formats["lowres"] == {"GIF", "BMP", "PNG"}
    assert formats["printed"] == {"WEBP", "TIFF", "PNG"}
    assert formats["tight"] == formats["lowres_fill"] == {"PNG", "JPEG", "BMP"}


def test_tight_crops_have_ink_on_all_four_edges(variants):
    for kind, _, data in variants:
        if kind == "tight":
            image = Image.open(io.BytesIO(data))
            pixels = np.asarray(image.getchannel("A") if image.mode == "RGBA" else image.convert("L"), dtype=int)
            corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
            paper = 0 if image.mode == "RGBA" or np.median(corners) < 128 else 255
            ink = np.abs(pixels - paper) > 96
            assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()


def test_int8_serving_model_stays_within_0_05_points_of_float(trained_checkpoint, data_dir):
    from mnist_kit import optimize as mnist_optimize

    images, labels = mnist_data.load(data_dir, "test", download=False)
    train_images, _ = mnist_data.load(data_dir, "train", download=False)
    model = mnist_optimize.load_float(trained_checkpoint)
    quantized = mnist_optimize.quantize_int8(model, train_images[: C.CALIBRATION_IMAGES])
    drop = mnist_optimize.accuracy(model, images, labels) - mnist_optimize.accuracy(quantized, images, labels)
    assert drop <= mnist_optimize.MAX_ACCURACY_DROP


def test_the_server_reads_variants_exactly_as_the_model_does_in_process(server, model_store, variants):
    sample = variants[::25]
    expected = predict(server.served_form(model_store / "mnist.mar"), [data for _, _, data in sample])
    served = [mnist_client.predict(data, url=server.inference_url)["digit"] for _, _, data in sample]
    assert served == expected
