"""Preprocessing shared by training, evaluation and the serving core: image bytes or pixels in, model input out.

Real images become MNIST-like the way MNIST itself was made: find the ink whatever its polarity, crop to it,
fit it in a 20×20 box keeping the aspect ratio, and centre it by centre of mass in 28×28.
Packed into the .mar beside the handler, so it imports only numpy, PIL and mnist_kit.constants: no torch, so a
server whose serving form is ONNX imports none.
"""

import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import ExifTags, Image

from mnist_kit import constants as C
from mnist_kit.worker.groups import digit_groups
from mnist_kit.worker.printed_lines import remove_rules
from mnist_kit.worker.request_errors import InputError

Image.MAX_IMAGE_PIXELS = C.MAX_IMAGE_PIXELS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR of a 28×28 PNG, 8-bit grayscale, not interlaced.
MNIST_PNG_HEADER = b"IHDR" + C.IMAGE_SIZE.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
# Images are reduced to at most this many pixels a side before any pixel work: plenty to find a digit
# that ends up 20 pixels tall, and it keeps preprocessing well under a millisecond for a canvas.
WORK_SIZE = 160
# Uneven lighting is removed block by block, BLOCK pixels a side, a block's paper level being its PAPER_QUANTILE,
# where paper is then at least SPARSE_INK of the picture (a photo, a drawing with a margin). A tight crop, whose
# ink fills much of the frame, is taken as evenly lit: some of its blocks are all ink.
BLOCK = 16
SPARSE_INK = 0.75
PAPER_QUANTILE = 0.2
# How to turn stored pixels upright for each EXIF orientation (2–8: mirrored and/or rotated), done by numpy on the
# reduced picture, not on the decoded one. Phones store photos as the sensor reads them and tag the turn that every
# viewer applies. Pillow's TIFF loader applies the tag itself, and drops it.
UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: np.rot90,
}
# Flat indices of the outermost ring of pixels of a 28×28 image: MNIST digits never touch it.
BORDER = np.flatnonzero(np.pad(np.zeros((C.IMAGE_SIZE - 2, C.IMAGE_SIZE - 2), dtype=bool), 1, constant_values=True))


@dataclass
class Picture:
    """What the model reads of one image: `pixels`, the 28×28 of its ink; where the ink falls into several digit-sized
    groups side by side, `digits` holds each group's 28×28 left to right, and `pixels` is the most prominent of them
    (the most ink): the answer names that digit, and says there were several."""

    pixels: np.ndarray
    digits: list = field(default_factory=list)


# Every uint8 pixel value (0 = background, 255 = ink) normalised as in training, in float32: training, archiving and
# serving all normalise by looking pixels up in this one table, so they compute the same numbers.
NORMALIZED = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(C.MNIST_MEAN)) / np.float32(C.MNIST_STD)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 N×28×28 → the normalised float32 N×1×28×28 batch the model takes."""
    return NORMALIZED.take(images[:, None])


def model_input(pixels: list[np.ndarray]) -> np.ndarray:
    """uint8 28×28 images → the normalised float32 N×1×28×28 batch the model takes."""
    return normalize(np.stack(pixels))


def read_array(values: list) -> Picture:
    """A 28×28 nested list of numbers 0..255 (either polarity) → the same preprocessing as an image."""
    try:
        pixels = np.array(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"a pixel array must be {C.IMAGE_SIZE}×{C.IMAGE_SIZE} numbers", reason="bad_json") from None
    if pixels.shape != (C.IMAGE_SIZE, C.IMAGE_SIZE):
        raise InputError(
            f"a pixel array must be {C.IMAGE_SIZE}×{C.IMAGE_SIZE}, got shape {pixels.shape}", reason="bad_json"
        )
    if not np.isfinite(pixels).all():
        raise InputError("a pixel array must hold finite numbers 0..255", reason="bad_json")
    pixels = np.clip(pixels, 0, 255)
    if is_mnist_native(pixels) and (pixels == np.round(pixels)).all():
        return Picture(pixels.astype(np.uint8))
    return picture(find_ink(pixels))


def read_image(data: bytes) -> Picture:
    """Image file bytes → their Picture: a 28×28 in MNIST's own format as it is (one digit, as MNIST's are), any
    other turned upright, its ink found, form rules taken off, split into digits where there are several, each
    cropped and centred."""
    pixels = mnist_png(data)
    if pixels is not None:
        return Picture(pixels)
    image = decode(data)
    turn = UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    if image.size == (C.IMAGE_SIZE, C.IMAGE_SIZE) and image.mode == "L" and turn is None:
        pixels = np.asarray(image)
        if is_mnist_native(pixels):
            return Picture(pixels)
    gray = grayscale(image)
    return picture(find_ink(np.ascontiguousarray(turn(gray)) if turn else gray))


def picture(ink: np.ndarray) -> Picture:
    """Ink 0..255 on 0 → its Picture: rules off, then one digit or several, each centred as MNIST's are."""
    ink = remove_rules(ink)
    groups = digit_groups(ink)
    if len(groups) < 2:
        return Picture(center(ink))
    digits = [center(group) for group in groups]
    return Picture(digits[int(np.argmax([group.sum() for group in groups]))], digits)


def mnist_png(data: bytes) -> np.ndarray | None:
    """A 28×28 8-bit grayscale PNG in MNIST's format, its chunks read here (every CRC checked) and its image data
    inflated and unfiltered by Pillow's own PNG decoder, without the general path's file parsing, EXIF and mode
    checks: the hot path of a digit service, in half the time. Anything else (interlaced, with transparency or an
    EXIF orientation, a bad CRC, ink at the border, unreadable) returns None: the general path."""
    if data[:8] != PNG_SIGNATURE or data[12:29] != MNIST_PNG_HEADER:
        return None
    if b"tRNS" in data or b"eXIf" in data:
        return None
    stream = image_data(data)
    if stream is None:
        return None
    try:
        image = Image.frombytes("L", (C.IMAGE_SIZE, C.IMAGE_SIZE), stream, "zip", "L")
    except Exception:
        return None
    pixels = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(C.IMAGE_SIZE, C.IMAGE_SIZE)
    return pixels if is_mnist_native(pixels) else None


def image_data(png: bytes) -> bytes | None:
    """A PNG's IDAT chunks joined, up to its IEND; None where a chunk is cut short or fails its CRC."""
    position, parts = len(PNG_SIGNATURE), []
    while position + 12 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        end = position + 8 + length
        if end + 4 > len(png) or zlib.crc32(png[position + 4 : end]) != int.from_bytes(png[end : end + 4], "big"):
            return None
        if kind == b"IEND":
            return b"".join(parts) or None
        if kind == b"IDAT":
            parts.append(png[position + 8 : end])
        position = end + 4
    return None


def is_mnist_native(pixels: np.ndarray) -> bool:
    """Already in MNIST's format (28×28, ink on a black border): used as it is, which is both exact and fast."""
    return not pixels.take(BORDER).any() and pixels.max() > 8


def decode(data: bytes) -> Image.Image:
    """Decode with a pixel limit checked from the header, and JPEGs decoded reduced (draft), not at full size."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise InputError(f"image too large: {e}", 413, reason="too_large") from None
    except Exception:
        raise InputError(
            "not a decodable image: send PNG, JPEG, BMP, GIF, WebP or TIFF", reason="undecodable"
        ) from None
    width, height = image.size
    if image.format not in C.IMAGE_FORMATS:
        raise InputError(
            f"unsupported image format {image.format}: send PNG, JPEG, BMP, GIF, WebP or TIFF", 415, reason="format"
        )
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}×{height})", reason="undecodable")
    if width * height > C.MAX_IMAGE_PIXELS:
        raise InputError(
            f"image too large: {width}×{height} pixels, the limit is {C.MAX_IMAGE_PIXELS:,}", 413, reason="too_large"
        )
    try:
        if image.mode.startswith("I;16"):
            image = image.convert("I")
        if image.format == "JPEG":
            image.draft("L", (WORK_SIZE, WORK_SIZE))
        image.load()
    except Exception as e:
        raise InputError(f"corrupt or truncated {image.format} image: {e}", reason="corrupt") from None
    return image


def grayscale(image: Image.Image) -> np.ndarray:
    """Any mode → float32 gray 0..255 at most WORK_SIZE a side; transparent pixels take the colour opposite
    to the ink's. Bands are reduced one at a time: one byte a pixel is four times cheaper than RGBA."""
    factor = -(-max(image.size) // WORK_SIZE)

    def small(band: Image.Image) -> np.ndarray:
        return np.asarray(band.reduce(factor) if factor > 1 else band, dtype=np.float32)

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = small(image.convert("F"))
        top = values.max()
        return values * (255.0 / top) if top > 0 else values
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return small(image.convert("L"))
    alpha = small(image.getchannel("A")) / 255.0
    gray = small(image.convert("L"))
    if alpha.min() >= 1.0:
        return gray
    opaque = alpha > 0.5
    ink_is_dark = opaque.any() and gray[opaque].mean() < 128
    background = 255.0 if ink_is_dark else 0.0
    return gray * alpha + background * (1.0 - alpha)


def find_ink(gray: np.ndarray) -> np.ndarray:
    """Gray 0..255 of either polarity → ink 0..255 on 0: paper, shading and noise removed.

    The paper is the side of the grey range, dark or light, that most of the border lies on: true with a wide
    margin, and still true when a tight crop lets the ink touch every edge, as long as it does not cover most
    of them. The paper's level and noise are measured on the paper's own pixels, never on the ink's, so ink
    that fills the frame is not taken for background.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    sample = gray[::2, ::2] if min(gray.shape) >= 32 else gray  # every fourth pixel: as good, and cheaper
    darkest, lightest = np.percentile(sample, [0.1, 99.9])
    if np.median(border) >= (darkest + lightest) / 2:
        ink, sample, peak = 255.0 - gray, 255.0 - sample, 255.0 - darkest
    else:
        ink, peak = gray.astype(np.float32, copy=True), lightest
    if border.min() == border.max():  # a clean export (canvas, MNIST): flat background, no noise
        level, noise = float(ink[0, 0]), 0.0
    else:
        flattened = None
        if min(ink.shape) >= 3 * BLOCK:  # room for uneven light (a photo), removed block by block
            flattened = ink - local_background(ink, peak)
            level, noise, paper = paper_level(flattened[::2, ::2])
            if paper < SPARSE_INK:  # ink fills the frame (a tight crop): blocks inside strokes were taken for paper
                flattened = None
        if flattened is None:
            level, noise, _ = paper_level(sample)
        else:
            ink, sample = flattened, flattened[::2, ::2]
        peak = np.percentile(sample, 99.9)
    # Above the paper's noise, but never more than half the contrast: where much of the paper side is the
    # soft edge of a thick stroke, the estimates run high, and the strokes' cores must still survive.
    ink -= level + min(3.0 * noise + 0.05 * (peak - level), 0.5 * (peak - level))
    np.clip(ink, 0, None, out=ink)
    inked = ink[ink > 0]
    top = np.percentile(inked, 95) if inked.size else 0.0
    if top <= 8.0:
        raise InputError("blank image: no digit found", reason="blank")
    return np.clip(ink * (255.0 / top), 0, 255, out=ink)


def paper_level(ink: np.ndarray) -> tuple[float, float, float]:
    """Level, noise and share of the paper in ink values (paper low), from the pixels on the paper's half of the
    range: the level is their most common value, not their median, which the soft edges of thick strokes pull
    up; the noise is their spread on the side away from the ink, which those edges do not reach."""
    paper = ink[ink < midpoint(ink)]
    if paper.size == 0:
        return float(ink.min()), 0.0, 0.0
    lowest = np.floor(paper.min())
    level = float(lowest + np.bincount((paper - lowest).astype(np.int64)).argmax())
    below = level - paper[paper <= level]  # none where every paper value lies above its bin's floor
    return level, 1.4826 * float(np.median(below)) if below.size else 0.0, paper.size / ink.size


def midpoint(values: np.ndarray) -> float:
    """Halfway between the darkest and the lightest values, ignoring the extreme 0.1 % (specks, hot pixels)."""
    return float(np.percentile(values, [0.1, 99.9]).mean())


def local_background(ink: np.ndarray, peak: float, block: int = BLOCK) -> np.ndarray:
    """The paper's level per block, upsampled: removes uneven lighting in photos.

    Each block's level is its PAPER_QUANTILE: paper wherever a block holds some, also in a tight crop where ink
    covers most of many blocks. Blocks wholly inside thick strokes are isolated where shading is smooth: a
    3×3 median over the block grid removes them."""
    height, width = ink.shape
    nh, nw = height // block, width // block
    blocks = ink[: nh * block, : nw * block].reshape(nh, block, nw, block).transpose(0, 2, 1, 3).reshape(nh, nw, -1)
    kth = int(PAPER_QUANTILE * block * block)
    levels = np.partition(blocks, kth, axis=2)[:, :, kth]
    padded = np.pad(levels, 1, mode="edge")
    levels = np.median([padded[i : i + nh, j : j + nw] for i in range(3) for j in range(3)], axis=0)
    typical = np.median(levels)
    levels = np.minimum(levels, typical + 0.5 * (peak - typical))
    return np.asarray(
        Image.fromarray(levels.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )


def center(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, fit it in 20×20 keeping the aspect ratio, centre its mass in 28×28 (MNIST's recipe)."""
    rows, cols = ink.sum(1), ink.sum(0)
    if rows.sum() <= 0:
        raise InputError("blank image: no digit found", reason="blank")
    top, bottom = _extent(rows)
    left, right = _extent(cols)
    crop = ink[top : bottom + 1, left : right + 1]
    height, width = crop.shape
    scale = C.DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = Image.fromarray(crop.astype(np.uint8), mode="L")
    if size != patch.size:
        patch = patch.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    patch = np.asarray(patch, dtype=np.float32)
    mass = patch.sum()
    if mass <= 0:
        raise InputError("blank image: no digit found", reason="blank")
    cy = (patch.sum(1) * np.arange(patch.shape[0])).sum() / mass
    cx = (patch.sum(0) * np.arange(patch.shape[1])).sum() / mass
    half = C.IMAGE_SIZE / 2  # MNIST centres of mass sit at pixel (14, 14)
    y = int(np.clip(round(half - cy), 0, C.IMAGE_SIZE - patch.shape[0]))
    x = int(np.clip(round(half - cx), 0, C.IMAGE_SIZE - patch.shape[1]))
    out = np.zeros((C.IMAGE_SIZE, C.IMAGE_SIZE), dtype=np.uint8)
    out[y : y + patch.shape[0], x : x + patch.shape[1]] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def _extent(mass: np.ndarray, cut: float = 0.002) -> tuple[int, int]:
    """First and last index holding ink, ignoring stray specks that carry only `cut` of the mass at each end."""
    cumulative = np.cumsum(mass) / mass.sum()
    return int(np.searchsorted(cumulative, cut, side="right")), int(np.searchsorted(cumulative, 1 - cut))
