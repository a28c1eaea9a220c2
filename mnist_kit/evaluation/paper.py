"""How the held-out kinds (kinds.py) put a digit's ink into a file: painted in either polarity or on a transparent
background, on paper photographed or scanned, on a form's page beside printed rules; encoded as PNG, JPEG, ...

Each draws from the kind's `rng` in a fixed order: the held-out sets stay the same for a seed.
"""

import io

import numpy as np
from PIL import Image, ImageFilter


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` as the bytes of a `fmt` file (Pillow's format name and save options)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def ink_mask(digit: np.ndarray, height: int, rng, *, thickness: int = 0) -> Image.Image:
    """An MNIST digit scaled up smoothly to `height` pixels tall, as a 0..255 ink mask."""
    mask = Image.fromarray(digit, mode="L").resize((height * 28 // 20,) * 2, Image.Resampling.BICUBIC)
    if thickness:
        mask = mask.filter(ImageFilter.MaxFilter(thickness))
    return mask


def on_paper(ink: np.ndarray, rng, blur=(0.3, 1.2)) -> Image.Image:
    """Ink (0..1) as a pen on paper photographed: tinted paper, coloured pen, light falling off to one side,
    sensor noise and a little blur; RGB."""
    height, width = ink.shape
    paper = np.array(rng.uniform(190, 250, size=3), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 - rng.uniform(0.05, 0.3) * ((np.cos(angle) * xx / width + np.sin(angle) * yy / height) + 1) / 2
    pen = np.array(rng.uniform(10, 90, size=3), dtype=np.float32)
    rgb = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light[..., None]
    rgb += rng.normal(0, rng.uniform(2, 8), size=rgb.shape).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(*blur)))


def ink_box(digit: np.ndarray) -> np.ndarray:
    """The digit cropped to the bounding box of its solid ink (half of full strength or more), cutting through
    the faint edges of the strokes: every edge of the result touches solid ink."""
    solid = digit >= 128
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def paint(ink: Image.Image, rng, transparent: float = 0.0) -> bytes:
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


def digit_ink(digit: np.ndarray, height: int, rng) -> np.ndarray:
    """The digit's ink (0..1) cropped to its extent and scaled to `height` pixels tall, sometimes a thicker pen."""
    rows, cols = np.flatnonzero((digit > 32).any(1)), np.flatnonzero((digit > 32).any(0))
    box = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], mode="L")
    width = max(1, round(box.width * height / box.height))
    mask = box.resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.3:
        mask = mask.filter(ImageFilter.MaxFilter(3))
    return np.asarray(mask, dtype=np.float32) / 255.0


def sheet(ink: np.ndarray, rng) -> bytes:
    """Ink (0..1) on a page: photographed (JPEG) or scanned (clean grey PNG, no lighting)."""
    if rng.random() < 0.5:
        return encode(on_paper(ink, rng), "JPEG", quality=int(rng.integers(70, 95)))
    gray = 245 - 225 * ink + rng.normal(0, 2, ink.shape)
    return encode(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), mode="L"), "PNG")


def on_page(ink: np.ndarray, rules: Image.Image, rng, *, angle: float = 2.0) -> bytes:
    """A digit's ink and printed rules (both 0..255 L layers of one size) as one page, turned a little."""
    page = np.maximum(ink, np.asarray(rules, dtype=np.float32) / 255.0)
    turned = Image.fromarray((page * 255).astype(np.uint8), mode="L").rotate(
        rng.uniform(-angle, angle), resample=Image.Resampling.BILINEAR
    )
    return sheet(np.asarray(turned, dtype=np.float32) / 255.0, rng)


def in_field(ink: np.ndarray, rng, margins: np.ndarray, *, pad: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The digit's ink placed on a larger page: the field's box (left, top, right, bottom) around it with
    `margins` (of the digit's height; negative: the digit crosses the line), and `pad` of blank page around."""
    height, width = ink.shape
    m = np.round(margins * height).astype(int)
    outer = int(pad * height) + max(0, -m.min()) + 4
    page = np.zeros((height + m[1] + m[3] + 2 * outer, width + m[0] + m[2] + 2 * outer), dtype=np.float32)
    top, left = outer + m[1], outer + m[0]
    page[top : top + height, left : left + width] = ink
    return page, (outer, outer, page.shape[1] - outer - 1, page.shape[0] - outer - 1)


def sent(ink: Image.Image, rng) -> bytes:
    """An ink mask (255 = ink) on a page, or painted: as letters and other non-digits are sent."""
    if rng.random() < 0.4:
        return sheet(np.asarray(ink, dtype=np.float32) / 255.0, rng)
    return paint(ink, rng, transparent=0.3)
