"""Pen paths and their rendering: the strokes behind the pad tests' handwritten digits (tests/handwriting.py) and
the held-out pen-drawn letters (mnist_kit.evaluation.kinds).

A path is a list of (x, y) points in a box one unit high, traced in the order and direction a hand moves.
"""

import math

from PIL import Image, ImageDraw

Point = tuple[float, float]
Path = list[Point]


def curve(*points: tuple[float, float], steps: int = 12) -> Path:
    """A smooth pen path through `points` (Catmull-Rom)."""
    pts = [points[0], *points, points[-1]]
    path = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        for s in range(steps):
            t = s / steps
            path.append(
                tuple(
                    0.5
                    * (
                        2 * p1[k]
                        + (-p0[k] + p2[k]) * t
                        + (2 * p0[k] - 5 * p1[k] + 4 * p2[k] - p3[k]) * t * t
                        + (-p0[k] + 3 * p1[k] - 3 * p2[k] + p3[k]) * t**3
                    )
                    for k in (0, 1)
                )
            )
    return path + [points[-1]]


def line(*points: tuple[float, float], steps: int = 8) -> Path:
    """Straight pen moves between `points`, corners kept sharp."""
    path = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        path += [(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps) for s in range(steps)]
    return path + [points[-1]]


def arc(center: Point, radii: Point, degrees: tuple[float, float], *, steps: int = 40) -> Path:
    """Along an ellipse from one angle to the other (degrees; 0 is right, 90 down: screen coordinates)."""
    (cx, cy), (rx, ry), (start, end) = center, radii, degrees
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * s / steps for s in range(steps + 1))
    ]


def render(strokes: list[Path], size: tuple[int, int], width: float, *, ink: int = 255) -> Image.Image:
    """Strokes in pixels as a round-capped pen draws them: ink (255) on 0, mode L."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    radius = width / 2
    for stroke in strokes:
        for x, y in stroke:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)
        if len(stroke) > 1:
            draw.line(stroke, fill=ink, width=max(1, round(width)))
    return image
