"""Preprocessing shared by training, evaluation, the handler and the client: bytes or pixels in, model input out.

Packed into the .mar beside the handler, so it imports only torch, PIL, numpy and mnist_constants.
"""

import base64
import io

import numpy as np
import torch
from PIL import Image

import mnist_constants as C


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 (0 = background, 255 = ink) → float N×1×28×28 normalised as in training."""
    return ((images.float() / 255.0 - C.MNIST_MEAN) / C.MNIST_STD).unsqueeze(1)


def decode(data: bytes) -> Image.Image:
    """Decode image bytes with PIL; raises ValueError naming the problem for anything that is not an image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:
        raise ValueError(f"cannot decode the image: {e}") from None
    return image


def to_pixels(image: Image.Image) -> np.ndarray:
    """Any PIL image → uint8 28×28 grayscale, white digit on black as in MNIST."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, image)
    image = image.convert("L")
    if image.size != (C.IMAGE_SIZE, C.IMAGE_SIZE):
        image = image.resize((C.IMAGE_SIZE, C.IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def image_bytes_to_pixels(data: bytes) -> np.ndarray:
    return to_pixels(decode(data))


def request_to_pixels(row: dict) -> np.ndarray:
    """One TorchServe request row → uint8 28×28 pixels.

    The payload may be image bytes (raw body or a multipart field `data`/`file`), a base64 string,
    a JSON object {"data": "<base64>"}, or a JSON 28×28 array of pixel values 0..255.
    """
    payload = row.get("data") or row.get("body") or row.get("file")
    if isinstance(payload, dict):
        payload = payload.get("data")
    if isinstance(payload, str):
        payload = base64.b64decode(payload, validate=True)
    if isinstance(payload, (bytes, bytearray)):
        return image_bytes_to_pixels(bytes(payload))
    if isinstance(payload, list):
        pixels = np.asarray(payload, dtype=np.float32)
        if pixels.shape != (C.IMAGE_SIZE, C.IMAGE_SIZE):
            raise ValueError(f"a pixel array must be {C.IMAGE_SIZE}×{C.IMAGE_SIZE}, got shape {pixels.shape}")
        return np.clip(pixels, 0, 255).astype(np.uint8)
    raise ValueError("empty request: send an image, a base64 string or a 28×28 array")
