"""Digits written the way people write them: pen paths, stroke by stroke, for the drawing-pad tests.

Each digit has one or more shapes (a plain 1 and one with a flag, an open and a closed 4, a 7 with and without
its bar, ...), each a list of pen strokes in a unit box traced in the order and direction a hand moves. Writers
differ in which shapes they use, size, place on the pad, slant, width, brush and the wobble of their hand; all
drawn from a seeded random generator, so a test draws the same digits every time. The shapes were designed from
how people write, not from what the model reads best; the accuracy test measures what it measures.
"""

import math
import random
from dataclasses import dataclass, replace

from mnist_kit import constants as C
from mnist_kit.training.pen import Path, arc, curve, line

# digit → shape name → strokes, each in a box 1 high; x runs 0..1 at the shape's own width (aspect below).
SHAPES: dict[int, dict[str, list[Path]]] = {
    0: {
        "oval from the top, anticlockwise": [arc((0.5, 0.5), (0.5, 0.5), (-90, -445))],
        "oval from the top right, clockwise": [arc((0.5, 0.5), (0.5, 0.5), (-60, 285))],
    },
    1: {
        "one stroke down": [line((0.5, 0.0), (0.5, 1.0))],
        "with a flag": [line((0.15, 0.28), (0.6, 0.0), (0.6, 1.0))],
        "with a flag and a foot": [line((0.15, 0.25), (0.55, 0.0), (0.55, 1.0)), line((0.15, 1.0), (0.95, 1.0))],
    },
    2: {
        "curve and a flat base": [
            curve((0.08, 0.25), (0.45, 0.0), (0.88, 0.22), (0.7, 0.55), (0.05, 1.0))
            + line((0.05, 1.0), (0.98, 0.98))[1:]
        ],
        "curve with a loop at the base": [
            curve(
                (0.1, 0.22), (0.5, 0.0), (0.88, 0.25), (0.62, 0.62), (0.15, 0.92), (0.3, 0.8), (0.35, 0.98), (0.95, 1.0)
            )
        ],
    },
    3: {
        "two bumps": [
            curve(
                (0.08, 0.15),
                (0.5, 0.0),
                (0.85, 0.2),
                (0.65, 0.42),
                (0.35, 0.48),
                (0.7, 0.54),
                (0.92, 0.78),
                (0.55, 1.0),
                (0.05, 0.86),
            )
        ],
        "flat top": [
            line((0.08, 0.0), (0.9, 0.0), (0.4, 0.4))
            + curve((0.4, 0.4), (0.85, 0.58), (0.8, 0.9), (0.42, 1.0), (0.05, 0.85))[1:]
        ],
    },
    4: {
        "open top, two strokes": [line((0.15, 0.0), (0.05, 0.62), (0.98, 0.62)), line((0.72, 0.05), (0.72, 1.0))],
        "closed, two strokes": [line((0.62, 0.0), (0.0, 0.66), (1.0, 0.66)), line((0.68, 0.12), (0.68, 1.0))],
    },
    5: {
        "stem and belly, then the bar": [
            line((0.18, 0.0), (0.12, 0.45))
            + curve((0.12, 0.45), (0.5, 0.36), (0.9, 0.6), (0.72, 0.94), (0.35, 1.0), (0.02, 0.86))[1:],
            line((0.18, 0.0), (0.9, 0.0)),
        ],
        "bar, stem and belly in one": [
            line((0.9, 0.0), (0.2, 0.0), (0.14, 0.45))
            + curve((0.14, 0.45), (0.55, 0.38), (0.9, 0.65), (0.7, 0.95), (0.3, 1.0), (0.02, 0.85))[1:]
        ],
    },
    6: {
        "curved stem into a loop": [
            curve(
                (0.8, 0.0),
                (0.4, 0.18),
                (0.12, 0.58),
                (0.22, 0.92),
                (0.52, 1.0),
                (0.85, 0.8),
                (0.72, 0.52),
                (0.4, 0.5),
                (0.14, 0.68),
            )
        ],
        "straight stem into a loop": [
            curve(
                (0.6, 0.0),
                (0.25, 0.45),
                (0.15, 0.8),
                (0.45, 1.0),
                (0.82, 0.82),
                (0.7, 0.55),
                (0.35, 0.55),
                (0.17, 0.72),
            )
        ],
    },
    7: {
        "bar and a straight stem": [line((0.02, 0.0), (0.98, 0.0), (0.38, 1.0))],
        "with a bar across": [line((0.02, 0.0), (0.98, 0.0), (0.4, 1.0)), line((0.35, 0.52), (0.9, 0.52))],
        "bar and a curved stem": [line((0.0, 0.05), (0.98, 0.0)) + curve((0.98, 0.0), (0.68, 0.45), (0.5, 1.0))[1:]],
    },
    8: {
        "an S and back up": [
            curve(
                (0.85, 0.12),
                (0.5, 0.0),
                (0.15, 0.16),
                (0.3, 0.38),
                (0.5, 0.5),
                (0.85, 0.72),
                (0.5, 1.0),
                (0.12, 0.76),
                (0.5, 0.5),
                (0.76, 0.3),
                (0.84, 0.1),
            )
        ],
        "two loops": [arc((0.5, 0.24), (0.32, 0.24), (-90, -450)), arc((0.5, 0.72), (0.42, 0.28), (-90, 270))],
    },
    9: {
        "loop and a straight stem": [arc((0.46, 0.27), (0.38, 0.27), (10, -355)) + line((0.84, 0.3), (0.82, 1.0))[1:]],
        "loop and a curved stem": [
            arc((0.46, 0.28), (0.38, 0.28), (10, -355)) + curve((0.84, 0.3), (0.8, 0.7), (0.55, 1.0))[1:]
        ],
    },
}
# Width of each digit for a height of 1, as it is usually written.
ASPECT = {0: 0.75, 1: 0.35, 2: 0.7, 3: 0.65, 4: 0.75, 5: 0.65, 6: 0.65, 7: 0.7, 8: 0.65, 9: 0.65}


@dataclass(frozen=True)
class Writer:
    """How one person writes: the shape each digit takes (its index in SHAPES), and ranges they vary in."""

    name: str
    shapes: dict[int, int]
    height: tuple[float, float]  # of the pad
    slant: tuple[float, float]  # shear: 0.3 leans the top 0.3 heights to the right
    width: tuple[float, float]  # times the usual aspect
    brush: tuple[float, float]  # pixels
    wobble: float  # of the hand, in heights


WRITERS = [
    Writer("neat, upright", {}, (0.55, 0.75), (-0.05, 0.08), (0.9, 1.1), (16, 22), 0.008),
    Writer(
        "slanted cursive",
        {1: 1, 2: 1, 3: 0, 4: 1, 5: 1, 7: 2, 8: 0, 9: 1},
        (0.5, 0.8),
        (0.2, 0.35),
        (0.85, 1.05),
        (14, 20),
        0.015,
    ),
    Writer(
        "European", {0: 1, 1: 2, 4: 1, 5: 0, 6: 1, 7: 1, 8: 1}, (0.5, 0.75), (0.0, 0.15), (0.9, 1.15), (16, 24), 0.012
    ),
    Writer("small, off-centre", {1: 1, 3: 1, 5: 1, 9: 1}, (0.32, 0.45), (-0.05, 0.2), (0.9, 1.2), (10, 14), 0.01),
    Writer(
        "hurried",
        {0: 1, 1: 1, 2: 1, 4: 1, 7: 2, 9: 1},
        (0.45, 0.85),
        (-0.1, 0.4),
        (0.75, 1.3),
        (12, 26),
        0.035,
    ),
    Writer(
        "big, quick marker", {0: 1, 2: 1, 6: 1, 8: 0, 7: 2}, (0.75, 0.9), (0.05, 0.25), (0.9, 1.25), (24, 32), 0.025
    ),
]


@dataclass
class Written:
    """One digit as drawn on the pad: strokes of canvas pixels, with the brush they were drawn with."""

    label: int
    writer: str
    shape: str
    brush: float
    strokes: list[Path]


def write(digit: int, writer: Writer, rng: random.Random, size: int = C.PAD_SIZE) -> Written:
    """`digit` as `writer` writes it on a size×size pad: their shape, at a random size, place and slant."""
    names = list(SHAPES[digit])
    shape = names[writer.shapes.get(digit, 0) % len(names)]
    height = rng.uniform(*writer.height) * size
    width = ASPECT[digit] * rng.uniform(*writer.width) * height
    slant = rng.uniform(*writer.slant)
    turn = math.radians(rng.uniform(-6, 6))
    brush = rng.uniform(*writer.brush)
    # wobble: a slow sway of the hand along each stroke, and a little tremor at each point
    sways = [(rng.uniform(0.5, 2.0), rng.uniform(0, 2 * math.pi)) for _ in range(4)]

    def place(x: float, y: float, along: float, k: int) -> tuple[float, float]:
        freq, phase = sways[k % 2], sways[2 + k % 2]
        dx = writer.wobble * math.sin(2 * math.pi * freq[0] * along + freq[1]) + rng.gauss(0, writer.wobble / 6)
        dy = writer.wobble * math.sin(2 * math.pi * phase[0] * along + phase[1]) + rng.gauss(0, writer.wobble / 6)
        u = (x - 0.5) * width / height + dx + slant * (0.5 - y)
        v = y - 0.5 + dy
        return (u * math.cos(turn) - v * math.sin(turn)) * height, (u * math.sin(turn) + v * math.cos(turn)) * height

    strokes = []
    for k, stroke in enumerate(SHAPES[digit][shape]):
        strokes.append([place(x, y, i / max(1, len(stroke) - 1), k) for i, (x, y) in enumerate(stroke)])
    xs = [x for s in strokes for x, _ in s]
    ys = [y for s in strokes for _, y in s]
    margin = brush / 2 + 4
    left = rng.uniform(margin - min(xs), size - margin - max(xs))
    top = rng.uniform(margin - min(ys), size - margin - max(ys))
    strokes = [[(round(x + left, 1), round(y + top, 1)) for x, y in s] for s in strokes]
    return Written(digit, writer.name, shape, round(brush, 1), strokes)


def every_shape(seed: int = 0) -> list[Written]:
    """Each digit in every shape there is for it, by the plainest writer: at least one path per digit."""
    rng = random.Random(seed)
    return [write(d, replace(WRITERS[0], shapes={d: i}), rng) for d in range(10) for i in range(len(SHAPES[d]))]


def collection(per_writer: int = 2, seed: int = 0) -> list[Written]:
    """Each writer writes each digit `per_writer` times: len(WRITERS) × 10 × per_writer digits."""
    rng = random.Random(seed)
    return [write(d, w, rng) for w in WRITERS for _ in range(per_writer) for d in range(10)]
