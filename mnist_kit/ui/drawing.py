"""A drawing on the pad: strokes of points with a brush width, undo and clear, rendered to the PNG that is sent.

The desktop pad (mnist_kit.ui.desktop) draws and sends through this; the web page does the same in JavaScript
on a <canvas> (round caps and joins, dark ink on white), so both send the model the same kind of picture.
"""

import io
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from mnist_kit import constants as C

PAPER, INK = 255, 0


@dataclass
class Stroke:
    width: float
    points: list[tuple[float, float]] = field(default_factory=list)


class Drawing:
    """Strokes in canvas pixels on a size×size square, taken back one at a time (undo) or all at once (clear)."""

    def __init__(self, size: int = C.PAD_SIZE):
        self.size = size
        self.strokes: list[Stroke] = []

    def begin(self, x: float, y: float, width: float = C.BRUSH_WIDTH) -> None:
        self.strokes.append(Stroke(width, [(x, y)]))

    def extend(self, x: float, y: float) -> None:
        if self.strokes:
            self.strokes[-1].points.append((x, y))

    def undo(self) -> None:
        if self.strokes:
            self.strokes.pop()

    def clear(self) -> None:
        self.strokes.clear()

    @property
    def empty(self) -> bool:
        return not self.strokes

    def image(self) -> Image.Image:
        """Dark round-capped strokes on white, as the page's canvas draws them."""
        image = Image.new("L", (self.size, self.size), PAPER)
        draw = ImageDraw.Draw(image)
        for stroke in self.strokes:
            radius = stroke.width / 2
            for x, y in stroke.points:  # round caps and joins
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=INK)
            if len(stroke.points) > 1:
                draw.line(stroke.points, fill=INK, width=round(stroke.width))
        return image

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image().save(buffer, format="PNG")
        return buffer.getvalue()
