"""Synthetic pictures for training the network to tell digits from the rest (outlier exposure).

Non-digits: letters and signs in the DejaVu fonts (thin to marker-thick, upright or slanted), made-up characters of
pen strokes (straight, and bent with arcs), loops with marks inside or a line across, tangles of strokes, polygons
filled or outlined, blobs, noise and textures. Training pushes the network's answer on them towards uniform (no
digit likelier than another), which is what the served not_a_digit flag reads.
So that print itself is not taken for a sign of a non-digit, digits printed in DejaVu faces train beside MNIST's
handwriting. Each is drawn at 64 px and cropped and centred by the serving preprocessing, as a served picture is.
The held-out pictures that measure all this (mnist_kit/evaluation: kinds.py, non_digits.py) are made otherwise:
other fonts and faces, pen-drawn letters and signs, other doodles, figures and photos.
"""

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_kit.training import pen
from mnist_kit.training.fonts import font_dir
from mnist_kit.worker.preprocess import center, find_ink
from mnist_kit.worker.request_errors import InputError

SIZE = 64
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
]
# Letters and signs unlike any digit: those written as digits (O, I, l, S, Z, b, g, q, ...) would teach the network
# to doubt real digits.
LETTERS = "ABCDEFHJKLMNPQRTUVWXYacdefhkmnprtuvwxy&#@%?+=*<>$"
# Printed digits train in faces the held-out printed digits (kinds.FONTS) do not use.
DIGIT_FONTS = [
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
]


@functools.cache
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / name), size)


def printed(text: str, fonts: list[str], rng) -> Image.Image:
    """`text` in one of `fonts`, from thin to marker-thick, turned and slanted a little, ink on 0."""
    font_ = font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(36, 56)))
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    stroke = int(rng.choice([0, 0, 1, 2, 3]))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font_, stroke_width=stroke)
    draw.text(
        ((SIZE - right - left) / 2, (SIZE - bottom - top) / 2), text, 255, font_, stroke_width=stroke, stroke_fill=255
    )
    shear = rng.uniform(-0.3, 0.3)
    image = image.transform(
        image.size, Image.Transform.AFFINE, (1, shear, -shear * SIZE / 2, 0, 1, 0), Image.Resampling.BILINEAR
    )
    return image.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)


def font_letter(rng) -> Image.Image:
    return printed(LETTERS[int(rng.integers(len(LETTERS)))], FONTS, rng)


def strokes(rng) -> Image.Image:
    """Two to four pen strokes, each a curve or a zigzag through four to eight random points."""
    paths = []
    for _ in range(int(rng.integers(2, 5))):
        points = [tuple(p) for p in rng.uniform(6, SIZE - 6, (int(rng.integers(4, 9)), 2))]
        paths.append(pen.curve(*points, steps=6) if rng.random() < 0.5 else pen.line(*points, steps=2))
    return pen.render(paths, (SIZE, SIZE), rng.uniform(2, 7))


def glyph(rng) -> Image.Image:
    """A made-up character: three to five pen strokes, straight or bent, between points of a 3×3 grid (jittered),
    as letters and signs are built."""
    grid = [(x, y) for x in (0.15, 0.5, 0.85) for y in (0.15, 0.5, 0.85)]
    paths = []
    for _ in range(int(rng.integers(3, 6))):
        a, b = rng.choice(len(grid), 2, replace=False)
        points = [np.array(grid[a]), np.array(grid[b])]
        if rng.random() < 0.4:  # bent through a point off the line
            points.insert(1, (points[0] + points[1]) / 2 + rng.uniform(-0.25, 0.25, 2))
        points = [tuple((p + rng.normal(0, 0.03, 2)) * SIZE) for p in points]
        paths.append(pen.curve(*points, steps=6) if len(points) == 3 else pen.line(*points, steps=4))
    return pen.render(paths, (SIZE, SIZE), rng.uniform(2.5, 7))


def drawn(paths: list[pen.Path], width: float) -> Image.Image:
    """Pen paths in a unit box, drawn at SIZE px with a pen `width` px wide."""
    return pen.render([[(x * SIZE, y * SIZE) for x, y in p] for p in paths], (SIZE, SIZE), width)


def curly(rng) -> Image.Image:
    """A made-up character with bends: three or four strokes, at least one an arc of an ellipse (a quarter to most of
    a turn), the others straight. Never fewer than three: an arc and a line can be a 2, 6, 7 or 9."""
    paths = []
    for n in range(int(rng.integers(3, 5))):
        if n == 0 or rng.random() < 0.4:
            cx, cy = rng.uniform(0.3, 0.7, 2)
            rx, ry = rng.uniform(0.12, 0.4, 2)
            start = rng.uniform(0, 360)
            paths.append(pen.arc((cx, cy), (rx, ry), (start, start + rng.choice([-1, 1]) * rng.uniform(90, 300))))
        else:
            paths.append(pen.line(*[tuple(p) for p in rng.uniform(0.1, 0.9, (2, 2))], steps=4))
    return drawn(paths, rng.uniform(2.5, 7))


def marked_loop(rng) -> Image.Image:
    """A closed outline (an ellipse, or a triangle, square or pentagon) with marks inside it or a line right across
    it: a 0 has nothing inside, and nothing crosses it."""
    cx, cy, rx, ry = 0.5, 0.5, rng.uniform(0.28, 0.45), rng.uniform(0.3, 0.45)
    if rng.random() < 0.6:
        paths = [pen.arc((cx, cy), (rx, ry), (0, 360))]
    else:
        corners = int(rng.integers(3, 6))
        turn = rng.uniform(0, 2 * np.pi)
        ring = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in turn + np.linspace(0, 2 * np.pi, corners + 1)]
        paths = [pen.line(*ring, steps=4)]
    for _ in range(int(rng.integers(1, 4))):
        style = int(rng.integers(3))
        x, y = cx + rng.uniform(-0.45, 0.45) * rx, cy + rng.uniform(-0.45, 0.45) * ry
        if style == 0:  # a dot
            paths.append(pen.arc((x, y), (0.03, 0.03), (0, 360)))
        elif style == 1:  # a short line inside
            dx, dy = rng.uniform(-0.4, 0.4) * rx, rng.uniform(-0.4, 0.4) * ry
            paths.append(pen.line((x - dx, y - dy), (x + dx, y + dy)))
        else:  # a line across, out on both sides
            angle = rng.uniform(0, np.pi)
            reach = rng.uniform(1.1, 1.4) * max(rx, ry)
            dx, dy = reach * np.cos(angle), reach * np.sin(angle)
            paths.append(pen.line((cx - dx, cy - dy), (cx + dx, cy + dy)))
    return drawn(paths, rng.uniform(2.5, 6))


def polygon(rng) -> Image.Image:
    """A filled polygon of three to eight corners, a pen-drawn one of five to nine corners in random order (it
    crosses itself: a closed outline would be a 0), or a few filled blobs."""
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    style = int(rng.integers(3))
    if style == 0:
        while True:  # not a sliver, which a 1 is
            corners = rng.uniform(4, SIZE - 4, (int(rng.integers(3, 9)), 2))
            x, y = corners[:, 0], corners[:, 1]
            if abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2 > 0.1 * np.ptp(x) * np.ptp(y) + 150:
                break
        draw.polygon([tuple(p) for p in corners], fill=255)
    elif style == 1:
        corners = [tuple(p) for p in rng.uniform(6, SIZE - 6, (int(rng.integers(5, 10)), 2))]
        return pen.render([pen.line(*corners, corners[0], steps=2)], (SIZE, SIZE), rng.uniform(2, 6))
    else:
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.uniform(0, SIZE - 10, 2)
            w, h = rng.uniform(6, 30, 2)
            draw.ellipse((x, y, x + w, y + h), fill=255)
    return image


def texture(rng) -> Image.Image:
    """Noise, blotches, stripes or a checkerboard."""
    style = int(rng.integers(4))
    if style == 0:
        values = rng.normal(128, rng.uniform(20, 90), (SIZE, SIZE))
    elif style == 1:
        small = rng.uniform(0, 255, (int(rng.integers(3, 12)),) * 2).astype(np.float32)
        values = np.asarray(Image.fromarray(small, mode="F").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    elif style == 2:
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        values = 128 + 127 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    else:
        cells = int(rng.integers(2, 8))
        values = (np.indices((SIZE, SIZE)) // (SIZE // cells)).sum(0) % 2 * 255
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")


MAKERS = (font_letter, font_letter, glyph, glyph, curly, marked_loop, strokes, polygon, texture)


def printed_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` printed digits (uint8 28×28, as served) and their labels: positives beside MNIST's."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = [center(np.asarray(printed(str(d), DIGIT_FONTS, rng), dtype=np.float32)) for d in labels]
    return np.stack(images), labels


def marks(count: int, seed: int = 0) -> np.ndarray:
    """`count` uint8 28×28 layers of stray marks near the edges (short lines and specks, what is left of a form's
    rule or a smudge beside a digit): laid over some training digits, so that a digit with them is still a digit."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 28, 28), dtype=np.uint8)
    for layer in out:
        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 3))):
            edge, at, length = int(rng.integers(4)), rng.uniform(2, 26), rng.uniform(2, 16)
            offset = rng.uniform(0.5, 3.5)
            x0, y0 = (rng.uniform(1, 27 - length), offset if edge == 0 else 27 - offset) if edge < 2 else (0, 0)
            if edge < 2:
                draw.line((x0, y0, x0 + length, y0 + rng.uniform(-1, 1)), fill=int(rng.integers(120, 256)), width=1)
            else:
                x = offset if edge == 2 else 27 - offset
                draw.line(
                    (x, at - length / 2, x + rng.uniform(-1, 1), at + length / 2), fill=int(rng.integers(120, 256))
                )
        layer[:] = np.asarray(image)
    return out


def make(count: int, seed: int = 0) -> np.ndarray:
    """`count` uint8 28×28 non-digits, as the serving preprocessing makes them; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        maker = MAKERS[int(rng.integers(len(MAKERS)))]
        image = maker(rng)
        if rng.random() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
        ink = np.asarray(image, dtype=np.float32)
        try:  # drawn ink is clean already; textures have no paper, and go through the search for ink
            out.append(center(find_ink(ink) if maker is texture else ink))
        except InputError:  # blank after all
            continue
    return np.stack(out)
