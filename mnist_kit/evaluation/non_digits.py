"""Held-out pictures that are not digits, for the not_a_digit figures (kinds.py's `not_digit` kind): letters in fonts
the training never saw, pen-drawn letters and signs, scribbles, shapes, noise and photos of things. The training's
own synthetic non-digits (outliers.py) are drawn apart from these, and its handwriting letters come from other fonts
and designers than these, so the figures measure what it learned."""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_kit.training import handwriting, pen
from mnist_kit.training.fonts import font_dir
from mnist_kit.training.pen import arc, curve, line

# Pictures that are not digits, for the not-a-digit figures. Letters that are written as digits are left out (O and
# o are 0; I, l, i and j are 1; S and s 5; Z and z 2; b, G 6; g, q 9): no reader tells them apart alone.
# Fonts the training's synthetic non-digits never use (mnist_kit.training.outliers draws its letters in DejaVu).
LETTER_FONTS = [
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmmi10.ttf",
]
LETTERS = "ABCDEFHKLMNPRTUVWXYadefhkmnrtuvwxy"
# Pen-drawn letters and signs, as PEN_SIGNS: strokes in a box 1 high, x from 0 to 1 at the sign's own width.
PEN_SIGNS = {
    "A": [line((0.0, 1.0), (0.5, 0.0), (1.0, 1.0)), line((0.22, 0.6), (0.78, 0.6))],
    "B": [
        line((0.1, 1.0), (0.1, 0.0)),
        curve((0.1, 0.0), (0.65, 0.02), (0.8, 0.24), (0.6, 0.45), (0.1, 0.48))
        + curve((0.1, 0.48), (0.75, 0.52), (0.92, 0.76), (0.65, 0.98), (0.1, 1.0))[1:],
    ],
    "C": [arc((0.55, 0.5), (0.45, 0.5), (-40, -320))],
    "D": [line((0.1, 0.0), (0.1, 1.0)), curve((0.1, 0.0), (0.7, 0.08), (0.95, 0.5), (0.7, 0.92), (0.1, 1.0))],
    "E": [line((0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)), line((0.1, 0.5), (0.7, 0.5))],
    "F": [line((0.9, 0.0), (0.1, 0.0), (0.1, 1.0)), line((0.1, 0.48), (0.7, 0.48))],
    "H": [line((0.1, 0.0), (0.1, 1.0)), line((0.9, 0.0), (0.9, 1.0)), line((0.1, 0.5), (0.9, 0.5))],
    "K": [line((0.1, 0.0), (0.1, 1.0)), line((0.9, 0.0), (0.1, 0.58)), line((0.35, 0.42), (0.95, 1.0))],
    "M": [line((0.05, 1.0), (0.1, 0.0), (0.5, 0.6), (0.9, 0.0), (0.95, 1.0))],
    "N": [line((0.1, 1.0), (0.1, 0.0), (0.9, 1.0), (0.9, 0.0))],
    "P": [line((0.1, 1.0), (0.1, 0.0)), curve((0.1, 0.0), (0.7, 0.05), (0.85, 0.28), (0.6, 0.5), (0.1, 0.52))],
    "R": [
        line((0.1, 1.0), (0.1, 0.0)),
        curve((0.1, 0.0), (0.7, 0.05), (0.85, 0.28), (0.6, 0.5), (0.1, 0.52)),
        line((0.4, 0.52), (0.95, 1.0)),
    ],
    "T": [line((0.0, 0.0), (1.0, 0.0)), line((0.5, 0.0), (0.5, 1.0))],
    "U": [curve((0.1, 0.0), (0.1, 0.7), (0.5, 1.0), (0.9, 0.7), (0.9, 0.0))],
    "V": [line((0.0, 0.0), (0.5, 1.0), (1.0, 0.0))],
    "W": [line((0.0, 0.0), (0.25, 1.0), (0.5, 0.35), (0.75, 1.0), (1.0, 0.0))],
    "X": [line((0.0, 0.0), (1.0, 1.0)), line((1.0, 0.0), (0.0, 1.0))],
    "Y": [line((0.0, 0.0), (0.5, 0.5), (1.0, 0.0)), line((0.5, 0.5), (0.5, 1.0))],
    "a": [arc((0.45, 0.66), (0.38, 0.33), (-30, -360)), line((0.85, 0.32), (0.88, 1.0))],
    "e": [line((0.1, 0.65), (0.9, 0.65)) + arc((0.5, 0.65), (0.42, 0.35), (0, -320))[1:]],
    "h": [line((0.1, 0.0), (0.1, 1.0)), curve((0.1, 0.55), (0.5, 0.35), (0.85, 0.55), (0.85, 1.0))],
    "k": [line((0.1, 0.0), (0.1, 1.0)), line((0.8, 0.35), (0.1, 0.72)), line((0.35, 0.6), (0.9, 1.0))],
    "m": [
        line((0.05, 1.0), (0.05, 0.35)),
        curve((0.05, 0.5), (0.27, 0.35), (0.47, 0.5), (0.5, 1.0)),
        curve((0.5, 0.5), (0.72, 0.35), (0.93, 0.5), (0.95, 1.0)),
    ],
    "n": [line((0.1, 1.0), (0.1, 0.35)), curve((0.1, 0.55), (0.5, 0.35), (0.85, 0.55), (0.85, 1.0))],
    "r": [line((0.2, 1.0), (0.2, 0.35)), curve((0.2, 0.62), (0.5, 0.38), (0.95, 0.42))],
    "w": [line((0.0, 0.35), (0.25, 1.0), (0.5, 0.55), (0.75, 1.0), (1.0, 0.35))],
    "x": [line((0.0, 0.35), (1.0, 1.0)), line((1.0, 0.35), (0.0, 1.0))],
    "y": [line((0.0, 0.0), (0.5, 0.55)), line((1.0, 0.0), (0.2, 1.0))],
    "+": [line((0.5, 0.1), (0.5, 0.9)), line((0.1, 0.5), (0.9, 0.5))],
    "#": [
        line((0.35, 0.0), (0.25, 1.0)),
        line((0.75, 0.0), (0.65, 1.0)),
        line((0.0, 0.33), (1.0, 0.33)),
        line((0.0, 0.67), (1.0, 0.67)),
    ],
    "?": [
        curve((0.1, 0.25), (0.5, 0.0), (0.9, 0.25), (0.5, 0.5), (0.5, 0.72)),
        arc((0.5, 0.95), (0.04, 0.04), (0, 360)),
    ],
    "%": [
        arc((0.22, 0.2), (0.18, 0.18), (0, 360)),
        line((0.9, 0.0), (0.1, 1.0)),
        arc((0.78, 0.8), (0.18, 0.18), (0, 360)),
    ],
    "=": [line((0.0, 0.35), (1.0, 0.35)), line((0.0, 0.65), (1.0, 0.65))],
    "*": [line((0.5, 0.0), (0.5, 1.0)), line((0.07, 0.25), (0.93, 0.75)), line((0.93, 0.25), (0.07, 0.75))],
    ":)": [
        arc((0.5, 0.5), (0.5, 0.5), (0, 360)),
        arc((0.33, 0.35), (0.05, 0.06), (0, 360)),
        arc((0.67, 0.35), (0.05, 0.06), (0, 360)),
        arc((0.5, 0.55), (0.28, 0.25), (20, 160)),
    ],
}
KINDS = ("font letter", "pen letter", "scribble", "shape", "noise", "photo of things", "handwriting letter")
HANDWRITING_PX = 84  # the size a handwriting-font letter is sent at


def handwriting_letter(rng) -> Image.Image:
    """A letter in a handwriting font the training never saw: the glyph bank's held-out designers
    (training/handwriting.py), scaled up."""
    letters = handwriting.load().select(held_out=True, digits=False).images
    picture = Image.fromarray(letters[int(rng.integers(len(letters)))])
    return picture.resize((HANDWRITING_PX, HANDWRITING_PX), Image.Resampling.BICUBIC)


def font_letter(rng) -> Image.Image:
    """A letter in a font the training never saw, printed as `printed_image` prints digits."""
    font = ImageFont.truetype(
        str(font_dir() / LETTER_FONTS[int(rng.integers(len(LETTER_FONTS)))]), int(rng.integers(40, 120))
    )
    letter = LETTERS[int(rng.integers(len(LETTERS)))]
    size = int(rng.integers(100, 220))
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    x = int(rng.integers(0, max(1, size - (right - left)))) - left
    y = int(rng.integers(0, max(1, size - (bottom - top)))) - top
    draw.text((x, y), letter, fill=255, font=font)
    return image.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BILINEAR)


def _pen(strokes: list[pen.Path], rng, aspect: float = 1.0) -> Image.Image:
    """Unit-box strokes as a hand draws them on a 280×280 pad: size, place, slant, turn, pen width, a wavering hand."""
    size = 280
    height = rng.uniform(0.4, 0.85) * size
    width = aspect * rng.uniform(0.75, 1.25) * height
    slant, turn = rng.uniform(-0.2, 0.3), np.radians(rng.uniform(-8, 8))
    wobble = rng.uniform(0.005, 0.03)
    brush = rng.uniform(0.05, 0.14) * height
    cos, sin = np.cos(turn), np.sin(turn)
    placed = []
    for stroke in strokes:
        points = np.array(stroke, dtype=np.float64)
        points += rng.normal(0, wobble, points.shape).cumsum(0) * 0.3
        u = (points[:, 0] - 0.5) * width / height + slant * (0.5 - points[:, 1])
        v = points[:, 1] - 0.5
        placed.append(np.stack([u * cos - v * sin, u * sin + v * cos], 1) * height)
    every = np.concatenate(placed)
    low, high = every.min(0) - brush, every.max(0) + brush
    offset = np.array(
        [rng.uniform(-low[0], max(-low[0], size - high[0])), rng.uniform(-low[1], max(-low[1], size - high[1]))]
    )
    return pen.render([[tuple(p) for p in s + offset] for s in placed], (size, size), brush)


def pen_letter(rng) -> Image.Image:
    """A letter or sign (+ # ? % = * and a smiley) drawn with a pen."""
    name = list(PEN_SIGNS)[int(rng.integers(len(PEN_SIGNS)))]
    return _pen(PEN_SIGNS[name], rng, aspect=0.8 if name.isalpha() else 1.0)


def scribble(rng) -> Image.Image:
    """A doodle: a tangle through many points, a zigzag, a spiral, hatching or a coil of loops."""
    style = int(rng.integers(5))
    if style == 0:
        strokes = [curve(*[tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(7, 14)), 2))], steps=8)]
    elif style == 1:
        teeth = int(rng.integers(4, 9))
        strokes = [line(*[(i / teeth, float(i % 2)) for i in range(teeth + 1)])]
    elif style == 2:
        turns = rng.uniform(2, 4)
        t = np.linspace(0, 1, 120)
        strokes = [[(0.5 + 0.5 * r * np.cos(a), 0.5 + 0.5 * r * np.sin(a)) for r, a in zip(t, t * turns * 2 * np.pi)]]
    elif style == 3:
        count = int(rng.integers(5, 11))
        strokes = [line((i / count, 1.0), (i / count + 0.3, 0.0)) for i in range(count)]
    else:
        loops = int(rng.integers(4, 8))
        t = np.linspace(0, loops * 2 * np.pi, 40 * loops)
        strokes = [[(x / (loops + 1), 0.5 - 0.45 * np.sin(a)) for x, a in zip(t / (2 * np.pi) + 0.5 * np.cos(t), t)]]
    return _pen(strokes, rng, aspect=rng.uniform(0.8, 1.6))


def shape(rng) -> Image.Image:
    """A drawn or filled figure: triangle, star, heart, arrow, square with its diagonals, hexagon, bolt, crescent."""
    figures = {
        "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0), (0.5, 0.0)],
        "star": [
            (0.5 + 0.5 * r * np.sin(a), 0.5 - 0.5 * r * np.cos(a))
            for a, r in zip(np.linspace(0, 2 * np.pi, 11), [1, 0.4] * 5 + [1])
        ],
        "heart": curve((0.5, 0.25), (0.75, 0.0), (1.0, 0.3), (0.5, 1.0), (0.0, 0.3), (0.25, 0.0), (0.5, 0.25)),
        "arrow": [(0.0, 0.4), (0.6, 0.4), (0.6, 0.15), (1.0, 0.5), (0.6, 0.85), (0.6, 0.6), (0.0, 0.6), (0.0, 0.4)],
        "square": [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)],
        "hexagon": [(0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)],
        "bolt": [(0.6, 0.0), (0.1, 0.55), (0.45, 0.55), (0.3, 1.0), (0.9, 0.4), (0.55, 0.4), (0.6, 0.0)],
        "crescent": arc((0.5, 0.5), (0.5, 0.5), (60, 300)) + arc((0.75, 0.5), (0.35, 0.43), (240, 120))[1:],
    }
    name = list(figures)[int(rng.integers(len(figures)))]
    if rng.random() < 0.6:
        return _pen([figures[name]], rng)
    size = int(rng.integers(80, 240))
    image = Image.new("L", (size, size), 0)
    scale = rng.uniform(0.4, 0.9) * size
    corner = rng.uniform(0, size - scale, 2)
    ImageDraw.Draw(image).polygon([tuple(corner + np.array(p) * scale) for p in figures[name]], fill=255)
    return image.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BILINEAR)


def noise(rng) -> Image.Image:
    """Sensor noise, salt and pepper, blotches (smooth noise) or random blocks: a camera pointed at nothing."""
    size = int(rng.integers(32, 400))
    style = int(rng.integers(4))
    if style == 0:
        values = rng.normal(128, rng.uniform(10, 80), (size, size))
    elif style == 1:
        values = np.where(rng.random((size, size)) < rng.uniform(0.02, 0.3), 255, 0)
    elif style == 2:
        small = rng.uniform(0, 255, (int(rng.integers(3, 10)),) * 2).astype(np.float32)
        values = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    else:
        cells = int(rng.integers(4, 16))
        blocks = rng.uniform(0, 255, (cells, cells)).astype(np.float32)
        values = np.asarray(Image.fromarray(blocks, mode="F").resize((size, size), Image.Resampling.NEAREST))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")


def photo_of_things(rng) -> Image.Image:
    """A photo of objects on a table: a lit, textured background with a few coloured objects (ellipses, boxes,
    a stick), blurred and noisy."""
    width, height = [(640, 480), (800, 600)][int(rng.integers(2))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 200, 3)
    shade = 1 - rng.uniform(0.1, 0.4) * (xx / width * np.cos(rng.uniform(0, 6.3)) + yy / height)
    rgb = base * shade[..., None] + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(40, width * 0.5), rng.uniform(40, height * 0.5)
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.line((x, y, x + w, y + h), fill=colour, width=int(rng.integers(8, 30)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
