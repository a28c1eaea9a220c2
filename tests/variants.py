"""Held-out images shaped the way people really send digits, made from MNIST test digits and printed fonts.

Five kinds: `mnist` (28×28 PNG as in the data set), `canvas` (a drawing app's export: black ink on a transparent
280×280 RGBA), `photo` (a phone photo of a digit on paper: uneven light, noise, blur, JPEG), `lowres` (another
writer's digit at low resolution, in GIF, BMP or 1-bit PNG) and `printed` (digits in the fonts matplotlib ships,
in WebP, TIFF and PNG). Deterministic for a seed; used by the accuracy tests, `mnist-kit evaluate` and the benchmarks.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("mnist", "canvas", "photo", "lowres", "printed")
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans-Oblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmss10.ttf",
    "cmr10.ttf",
]


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def mnist_png(digit: np.ndarray, rng) -> bytes:
    return encode(Image.fromarray(digit, mode="L"), "PNG")


def _ink_mask(digit: np.ndarray, height: int, rng, thickness: int = 0) -> Image.Image:
    """An MNIST digit scaled up smoothly to `height` pixels tall, as a 0..255 ink mask."""
    mask = Image.fromarray(digit, mode="L").resize((height * 28 // 20,) * 2, Image.Resampling.BICUBIC)
    if thickness:
        mask = mask.filter(ImageFilter.MaxFilter(thickness))
    return mask


def canvas_png(digit: np.ndarray, rng) -> bytes:
    """Black strokes on a transparent background, like a <canvas> export; the colour channels alone are all black."""
    size = 280
    mask = _ink_mask(digit, int(rng.integers(110, 200)), rng, thickness=int(rng.choice([0, 3, 5])))
    alpha = Image.new("L", (size, size), 0)
    limit = size - mask.size[0]
    alpha.paste(
        mask, (int(rng.integers(min(0, limit), max(1, limit))), int(rng.integers(min(0, limit), max(1, limit))))
    )
    if rng.random() < 0.25:  # white ink on an opaque dark canvas
        return encode(Image.merge("RGB", [alpha] * 3), "PNG")
    black = Image.new("L", (size, size), 0)
    return encode(Image.merge("RGBA", [black, black, black, alpha]), "PNG")


def photo_jpeg(digit: np.ndarray, rng) -> bytes:
    """Dark ink on light paper, off-centre, rotated a little, unevenly lit, noisy, blurred and JPEG-compressed."""
    width, height = [(640, 480), (1000, 750), (1600, 1200)][int(rng.integers(3))]
    ink_height = int(height * rng.uniform(0.25, 0.6))
    mask = _ink_mask(digit, ink_height, rng, thickness=int(rng.choice([0, 3])))
    mask = mask.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    layer = Image.new("L", (width, height), 0)
    x = int(rng.integers(0, width - mask.size[0]))
    y = int(rng.integers(0, max(1, height - mask.size[1])))
    layer.paste(mask, (x, y))
    ink = np.asarray(layer, dtype=np.float32) / 255.0
    paper = np.array(rng.uniform(190, 250, size=3), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 - rng.uniform(0.05, 0.3) * ((np.cos(angle) * xx / width + np.sin(angle) * yy / height) + 1) / 2
    pen = np.array(rng.uniform(10, 90, size=3), dtype=np.float32)
    rgb = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light[..., None]
    rgb += rng.normal(0, rng.uniform(2, 8), size=rgb.shape).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return encode(image, "JPEG", quality=int(rng.integers(60, 92)))


def lowres_image(digit: np.ndarray, rng) -> bytes:
    """A small scan: dark on white at 12–20 pixels, saved as GIF, BMP or 1-bit PNG."""
    size = int(rng.integers(12, 21))
    small = Image.fromarray(255 - digit, mode="L").resize((size, size), Image.Resampling.BOX)
    fmt = ["GIF", "BMP", "PNG1", "PNGL"][int(rng.integers(4))]
    if fmt == "GIF":
        return encode(small.convert("P"), "GIF")
    if fmt == "BMP":
        return encode(small.convert("RGB"), "BMP")
    if fmt == "PNG1":
        return encode(small.point(lambda v: 255 if v > 160 else 0).convert("1"), "PNG")
    return encode(small, "PNG")


def printed_image(digit: int, rng) -> bytes:
    """A digit in one of matplotlib's fonts, dark on light or light on dark, in WebP, TIFF (8 or 16 bit) or PNG."""
    font = ImageFont.truetype(str(font_dir() / FONTS[int(rng.integers(len(FONTS)))]), int(rng.integers(40, 120)))
    size = int(rng.integers(100, 220))
    dark_on_light = rng.random() < 0.75
    image = Image.new("L", (size, size), 235 if dark_on_light else 25)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    x = int(rng.integers(0, max(1, size - (right - left)))) - left
    y = int(rng.integers(0, max(1, size - (bottom - top)))) - top
    draw.text((x, y), str(digit), fill=20 if dark_on_light else 230, font=font)
    image = image.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BILINEAR, fillcolor=image.getpixel((0, 0)))
    fmt = ["WEBP", "TIFF", "TIFF16", "PNGRGB"][int(rng.integers(4))]
    if fmt == "WEBP":
        return encode(image.convert("RGB"), "WEBP", quality=80)
    if fmt == "TIFF":
        return encode(image, "TIFF")
    if fmt == "TIFF16":
        return encode(Image.fromarray(np.asarray(image, dtype=np.uint16) * 257), "TIFF")
    return encode(image.convert("RGB"), "PNG")


MAKERS = {"mnist": mnist_png, "canvas": canvas_png, "photo": photo_jpeg, "lowres": lowres_image}


def make(
    images: np.ndarray, labels: np.ndarray, per_kind: int = 100, seed: int = 0, kinds=KINDS
) -> list[tuple[str, int, bytes]]:
    """(kind, label, encoded image) for `per_kind` images of each kind, from MNIST test images and labels."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        picks = rng.choice(len(images), size=per_kind, replace=False)
        for n, i in enumerate(picks):
            if kind == "printed":
                label = n % 10
                out.append((kind, label, printed_image(label, rng)))
            else:
                out.append((kind, int(labels[i]), MAKERS[kind](np.asarray(images[i]), rng)))
    return out
