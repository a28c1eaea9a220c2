"""The handwriting glyph bank: letters and digits in handwriting fonts that ship as packages (npm's Fontsource, Debian's
fonts-*), each drawn several ways (size, stroke width, slant, turn, pen pressure, an elastic warp) and made 28×28 by
the serving preprocessing. `scripts/make_handwriting.py` rebuilds it from the packages; the kit ships the result, so
training needs neither npm nor root.

The default recipe trains on the letters as non-digits and on the digits as digits, so that handwriting alone is not
taken for a sign of a non-digit; the fonts of held-out designers are for measurement only.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANK = Path(__file__).with_name("handwriting.npz")
# Every Latin letter that is not written as a digit (O o 0, I l i j 1, S s 5, Z z 2, G b 6, g q 9), both cases.
LETTERS = "ABCDEFHJKLMNPQRTUVWXYacdefhkmnprtuvwxy"
DIGITS = "0123456789"


@dataclass(frozen=True)
class Glyphs:
    """uint8 28×28 pictures, the character each shows, and the index of its font in `fonts` (family, designer,
    licence, source, held_out)."""

    images: np.ndarray
    chars: np.ndarray
    font: np.ndarray
    fonts: list[dict]

    def select(self, *, held_out: bool, digits: bool) -> "Glyphs":
        """The digits or the letters of the trained (or the held-out) fonts."""
        held = np.array([f["held_out"] for f in self.fonts])[self.font]
        is_digit = (self.chars >= ord("0")) & (self.chars <= ord("9"))
        keep = (held == held_out) & (is_digit == digits)
        return Glyphs(self.images[keep], self.chars[keep], self.font[keep], self.fonts)

    @property
    def labels(self) -> np.ndarray:
        """The digit each picture shows (for the digits)."""
        return (self.chars - ord("0")).astype(np.int64)


@functools.cache
def load(path=BANK) -> Glyphs:
    with np.load(path) as bank:
        return Glyphs(bank["images"], bank["chars"], bank["fonts"], json.loads(str(bank["about"])))
