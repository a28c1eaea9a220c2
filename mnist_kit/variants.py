"""Held-out images shaped the way people really send digits, made from MNIST test digits and printed fonts.

Eight kinds: `mnist` (28×28 PNG as in the data set), `canvas` (a drawing app's export: black ink on a transparent
280×280 RGBA), `photo` (a phone photo of a digit on paper: uneven light, noise, blur, JPEG), `lowres` (another
writer's digit at low resolution, in GIF, BMP or 1-bit PNG), `printed` (digits in the fonts matplotlib ships,
in WebP, TIFF and PNG), `tight` (cropped to the ink, which touches all four edges, at several scales, either
polarity, some transparent), `lowres_fill` (8×8 to 16×16 with coarse grey levels, as old optical-recognition
data sets store digits, scaled up and filling the frame) and `offcentre` (ink at one edge, a wide margin on the
other side). Deterministic for a seed; used by the accuracy tests, `mnist-kit evaluate --real-world` and
`scripts/make_samples.py`.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("mnist", "canvas", "photo", "lowres", "printed", "tight", "lowres_fill", "offcentre")
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


def _ink_box(digit: np.ndarray) -> np.ndarray:
    """The digit cropped to the bounding box of its solid ink (half of full strength or more), cutting through
    the faint edges of the strokes: every edge of the result touches solid ink."""
    solid = digit >= 128
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _paint(ink: Image.Image, rng, transparent: float = 0.0) -> bytes:
    """An ink mask (255 = ink) as dark on light or light on dark, sometimes ink on a transparent background,
    in PNG, JPEG or BMP."""
    if rng.random() < transparent:
        black = Image.new("L", ink.size, 0)
        return encode(Image.merge("RGBA", [black, black, black, ink]), "PNG")
    if rng.random() < 0.5:
        ink = ink.point(lambda v: 255 - v)
    fmt = ["PNG", "JPEG", "BMP"][int(rng.integers(3))]
    if fmt == "JPEG":
        return encode(ink.convert("RGB"), "JPEG", quality=int(rng.integers(75, 95)))
    return encode(ink, fmt)


def tight_crop(digit: np.ndarray, rng) -> bytes:
    """The digit cropped tightly around its ink, as a user crops a scan before uploading, scaled 1× to 8×."""
    box = Image.fromarray(_ink_box(digit), mode="L")
    scale = [1, 2, 3, 4, 6, 8][int(rng.integers(6))]
    resample = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST][int(rng.integers(3))]
    return _paint(box.resize((box.width * scale, box.height * scale), resample), rng, transparent=0.2)


def lowres_fill(digit: np.ndarray, rng) -> bytes:
    """The digit's ink box, squared, reduced to 8×8–16×16 with 5 to 17 grey levels (the UCI optical digits
    keep 0..16), then scaled up to 32–128 px: a coarse digit that fills its frame."""
    box = _ink_box(digit)
    side = max(box.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    square[top : top + box.shape[0], left : left + box.shape[1]] = box
    small = np.asarray(Image.fromarray(square).resize((int(rng.integers(8, 17)),) * 2, Image.Resampling.BOX))
    levels = int(rng.choice([5, 9, 17])) - 1
    small = (np.round(small / 255.0 * levels) * (255.0 / levels)).astype(np.uint8)
    size = int(rng.integers(32, 129))
    resample = [Image.Resampling.NEAREST, Image.Resampling.BILINEAR][int(rng.integers(2))]
    return _paint(Image.fromarray(small).resize((size, size), resample), rng)


def offcentre(digit: np.ndarray, rng) -> bytes:
    """The digit against one edge (0–2 px away) of a frame two to five times its size, wide margin opposite."""
    box = Image.fromarray(_ink_box(digit), mode="L")
    scale = int(rng.integers(2, 6))
    box = box.resize((box.width * scale, box.height * scale), Image.Resampling.BICUBIC)
    size = max(box.size) * int(rng.integers(2, 6))
    frame = Image.new("L", (size, size), 0)
    gap = int(rng.integers(0, 3))
    x = int(rng.integers(0, size - box.width + 1))
    y = int(rng.integers(0, size - box.height + 1))
    edge = int(rng.integers(4))
    x = gap if edge == 0 else size - box.width - gap if edge == 1 else x
    y = gap if edge == 2 else size - box.height - gap if edge == 3 else y
    frame.paste(box, (x, y))
    return _paint(frame, rng, transparent=0.2)


MAKERS = {
    "mnist": mnist_png,
    "canvas": canvas_png,
    "photo": photo_jpeg,
    "lowres": lowres_image,
    "tight": tight_crop,
    "lowres_fill": lowres_fill,
    "offcentre": offcentre,
}


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
