"""Accuracy on images shaped the way people send digits (mnist_variants), with the default training recipe."""

import io
import zipfile

import numpy as np
import pytest
import torch
import variants as mnist_variants
from PIL import Image

from mnist_kit import client as mnist_client
from mnist_kit import data as mnist_data
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


@pytest.fixture(scope="module")
def accuracy_by_kind(trained_checkpoint, variants) -> dict[str, float]:
    predicted = predict(load(trained_checkpoint), [data for _, _, data in variants])
    correct: dict[str, list[bool]] = {}
    for (kind, label, _), guess in zip(variants, predicted):
        correct.setdefault(kind, []).append(guess == label)
    return {kind: 100 * float(np.mean(hits)) for kind, hits in correct.items()}


def test_every_mnist_test_image_sent_as_png_is_read_at_least_99_percent(trained_checkpoint, data_dir):
    images, labels = mnist_data.load(data_dir, "test", download=False)
    pngs = [mnist_variants.encode(Image.fromarray(image.numpy()), "PNG") for image in images]
    predicted = predict(load(trained_checkpoint), pngs)
    assert 100 * np.mean(np.array(predicted) == labels.numpy()) >= 99.0


@pytest.mark.parametrize("kind", [k for k in mnist_variants.KINDS if k != "mnist"])
def test_each_real_world_kind_is_read_at_least_95_percent(accuracy_by_kind, kind):
    assert accuracy_by_kind[kind] >= 95.0, accuracy_by_kind


def test_real_world_images_overall_are_read_at_least_97_percent(accuracy_by_kind):
    assert np.mean(list(accuracy_by_kind.values())) >= 97.0, accuracy_by_kind


def test_every_variant_kind_decodes_to_the_format_it_claims(variants):
    formats = {kind: set() for kind in mnist_variants.KINDS}
    for kind, _, data in variants:
        formats[kind].add(Image.open(io.BytesIO(data)).format)
    assert formats["photo"] == {"JPEG"}
    assert formats["lowres"] == {"GIF", "BMP", "PNG"}
    assert formats["printed"] == {"WEBP", "TIFF", "PNG"}


def test_int8_serving_model_stays_within_0_05_points_of_float(trained_checkpoint, data_dir):
    from mnist_kit import optimize as mnist_optimize

    images, labels = mnist_data.load(data_dir, "test", download=False)
    train_images, _ = mnist_data.load(data_dir, "train", download=False)
    model = mnist_optimize.load_float(trained_checkpoint)
    quantized = mnist_optimize.quantize_int8(model, train_images[: mnist_optimize.CALIBRATION_IMAGES])
    drop = mnist_optimize.accuracy(model, images, labels) - mnist_optimize.accuracy(quantized, images, labels)
    assert drop <= mnist_optimize.MAX_ACCURACY_DROP


def test_the_server_reads_variants_exactly_as_the_model_does_in_process(server, model_store, variants):
    sample = variants[::25]
    with zipfile.ZipFile(model_store / "mnist.mar") as z:
        archived = torch.jit.load(io.BytesIO(z.read("model.pt")))
    expected = predict(archived, [data for _, _, data in sample])
    served = [mnist_client.predict(data, url=server.inference_url)["digit"] for _, _, data in sample]
    assert served == expected
