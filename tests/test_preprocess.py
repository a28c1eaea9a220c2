import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

import mnist_constants as C
import mnist_preprocess


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_normalize_uses_the_training_mean_and_std():
    x = mnist_preprocess.normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2)
    assert x[0, 0, 0].tolist() == pytest.approx([-C.MNIST_MEAN / C.MNIST_STD, (1 - C.MNIST_MEAN) / C.MNIST_STD])


def test_an_mnist_png_round_trips_to_its_pixels(digits):
    pixels = np.asarray(Image.open(digits[7]))
    assert np.array_equal(mnist_preprocess.image_bytes_to_pixels(digits[7].read_bytes()), pixels)


def test_a_larger_image_is_scaled_to_28_by_28():
    image = Image.new("L", (280, 280))
    assert mnist_preprocess.image_bytes_to_pixels(png(image)).shape == (28, 28)


def test_transparent_background_becomes_black_and_white_ink_stays_white():
    image = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    image.putpixel((14, 14), (255, 255, 255, 255))
    pixels = mnist_preprocess.image_bytes_to_pixels(png(image))
    assert pixels[14, 14] == 255 and pixels.sum() == 255


def test_undecodable_bytes_raise_a_value_error_naming_the_problem():
    with pytest.raises(ValueError, match="cannot decode the image"):
        mnist_preprocess.image_bytes_to_pixels(b"not an image")


@pytest.mark.parametrize("row", [
    lambda b: {"body": b},
    lambda b: {"data": b},
    lambda b: {"file": b},
    lambda b: {"body": base64.b64encode(b).decode()},
    lambda b: {"body": {"data": base64.b64encode(b).decode()}},
])
def test_request_formats_all_give_the_same_pixels(digits, row):
    data = digits[3].read_bytes()
    assert np.array_equal(mnist_preprocess.request_to_pixels(row(data)), np.asarray(Image.open(digits[3])))


def test_a_28_by_28_pixel_array_is_accepted():
    pixels = np.arange(784).reshape(28, 28) % 256
    assert np.array_equal(mnist_preprocess.request_to_pixels({"body": pixels.tolist()}), pixels)


def test_a_pixel_array_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="28×28"):
        mnist_preprocess.request_to_pixels({"body": [[0] * 27] * 28})
