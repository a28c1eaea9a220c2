"""Held-out images shaped the way people really send digits, made from MNIST test digits and fonts.

The kinds: `mnist` (28×28 PNG as in the data set), `canvas` (a drawing app's export: black ink on a transparent
280×280 RGBA), `photo` (a phone photo of a digit on paper: uneven light, noise, blur, JPEG), `lowres` (another
writer's digit at low resolution, in GIF, BMP or 1-bit PNG), `printed` (digits in the fonts matplotlib ships,
in WebP, TIFF and PNG), `tight` (cropped to the ink, which touches all four edges, at several scales, either
polarity, some transparent), `lowres_fill` (8×8 to 16×16 with coarse grey levels, as old optical-recognition
data sets store digits, scaled up and filling the frame) and `offcentre` (ink at one edge, a wide margin on the
other side); then `rotated` phone photos, `boxed` and `underlined` digits on forms, `handwriting` (digits in
handwriting fonts of designers the training never saw), and the kinds measured by their flag: `several` digits,
`not_digit` (every kind of non-digit together) and each kind alone (`not_digit/pen letter`, ...). Deterministic
for a seed; used by the accuracy tests, `mnist-kit evaluate --real-world` and `scripts/make_samples.py`.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_kit.evaluation import non_digits, paper
from mnist_kit.training import handwriting, pen
from mnist_kit.training.fonts import font_dir

KINDS = (
    *("mnist", "canvas", "photo", "lowres", "printed", "tight", "lowres_fill", "offcentre", "rotated", "boxed"),
    *("underlined", "several", "not_digit", "handwriting"),
    *(f"not_digit/{kind}" for kind in non_digits.KINDS),
)
# The kinds measured by the flag their answers must carry, not by their digit: several digits, non-digits of every
# kind together, and each kind of non-digit alone.
FLAGGED = {"several": "several_digits", **{kind: "not_a_digit" for kind in KINDS if kind.startswith("not_digit")}}
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


def mnist_png(digit: np.ndarray, rng) -> bytes:
    return paper.encode(Image.fromarray(digit, mode="L"), "PNG")


def canvas_png(digit: np.ndarray, rng) -> bytes:
    """Black strokes on a transparent background, like a <canvas> export; the colour channels alone are all black."""
    size = 280
    mask = paper.ink_mask(digit, int(rng.integers(110, 200)), rng, thickness=int(rng.choice([0, 3, 5])))
    alpha = Image.new("L", (size, size), 0)
    limit = size - mask.size[0]
    alpha.paste(
        mask, (int(rng.integers(min(0, limit), max(1, limit))), int(rng.integers(min(0, limit), max(1, limit))))
    )
    if rng.random() < 0.25:  # white ink on an opaque dark canvas
        return paper.encode(Image.merge("RGB", [alpha] * 3), "PNG")
    black = Image.new("L", (size, size), 0)
    return paper.encode(Image.merge("RGBA", [black, black, black, alpha]), "PNG")


def photo_jpeg(digit: np.ndarray, rng) -> bytes:
    """Dark ink on light paper, off-centre, rotated a little, unevenly lit, noisy, blurred and JPEG-compressed."""
    return paper.encode(_photo(digit, rng), "JPEG", quality=int(rng.integers(60, 92)))


def _photo(digit: np.ndarray, rng) -> Image.Image:
    width, height = [(640, 480), (1000, 750), (1600, 1200)][int(rng.integers(3))]
    ink_height = int(height * rng.uniform(0.25, 0.6))
    mask = paper.ink_mask(digit, ink_height, rng, thickness=int(rng.choice([0, 3])))
    mask = mask.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    layer = Image.new("L", (width, height), 0)
    x = int(rng.integers(0, width - mask.size[0]))
    y = int(rng.integers(0, max(1, height - mask.size[1])))
    layer.paste(mask, (x, y))
    return paper.on_paper(np.asarray(layer, dtype=np.float32) / 255.0, rng, blur=(0.5, 2.0))


def lowres_image(digit: np.ndarray, rng) -> bytes:
    """A small scan: dark on white at 12–20 pixels, saved as GIF, BMP or 1-bit PNG."""
    size = int(rng.integers(12, 21))
    small = Image.fromarray(255 - digit, mode="L").resize((size, size), Image.Resampling.BOX)
    fmt = ["GIF", "BMP", "PNG1", "PNGL"][int(rng.integers(4))]
    if fmt == "GIF":
        return paper.encode(small.convert("P"), "GIF")
    if fmt == "BMP":
        return paper.encode(small.convert("RGB"), "BMP")
    if fmt == "PNG1":
        return paper.encode(small.point(lambda v: 255 if v > 160 else 0).convert("1"), "PNG")
    return paper.encode(small, "PNG")


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
        return paper.encode(image.convert("RGB"), "WEBP", quality=80)
    if fmt == "TIFF":
        return paper.encode(image, "TIFF")
    if fmt == "TIFF16":
        return paper.encode(Image.fromarray(np.asarray(image, dtype=np.uint16) * 257), "TIFF")
    return paper.encode(image.convert("RGB"), "PNG")


def tight_crop(digit: np.ndarray, rng) -> bytes:
    """The digit cropped tightly around its ink, as a user crops a scan before uploading, scaled 1× to 8×."""
    box = Image.fromarray(paper.ink_box(digit), mode="L")
    scale = [1, 2, 3, 4, 6, 8][int(rng.integers(6))]
    resample = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST][int(rng.integers(3))]
    return paper.paint(box.resize((box.width * scale, box.height * scale), resample), rng, transparent=0.2)


def lowres_fill(digit: np.ndarray, rng) -> bytes:
    """The digit's ink box, squared, reduced to 8×8–16×16 with 5 to 17 grey levels (the UCI optical digits
    keep 0..16), then scaled up to 32–128 px: a coarse digit that fills its frame."""
    box = paper.ink_box(digit)
    side = max(box.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    square[top : top + box.shape[0], left : left + box.shape[1]] = box
    small = np.asarray(Image.fromarray(square).resize((int(rng.integers(8, 17)),) * 2, Image.Resampling.BOX))
    levels = int(rng.choice([5, 9, 17])) - 1
    small = (np.round(small / 255.0 * levels) * (255.0 / levels)).astype(np.uint8)
    size = int(rng.integers(32, 129))
    resample = [Image.Resampling.NEAREST, Image.Resampling.BILINEAR][int(rng.integers(2))]
    return paper.paint(Image.fromarray(small).resize((size, size), resample), rng)


def offcentre(digit: np.ndarray, rng) -> bytes:
    """The digit against one edge (0–2 px away) of a frame two to five times its size, wide margin opposite."""
    box = Image.fromarray(paper.ink_box(digit), mode="L")
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
    return paper.paint(frame, rng, transparent=0.2)


# EXIF orientation → how a phone stores an upright picture under that tag (the inverse of what a viewer does).
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def rotated_photo(digit: np.ndarray, rng, orientation: int | None = None) -> bytes:
    """A phone photo stored as the sensor reads it, with the EXIF Orientation tag every viewer applies: mostly 6
    and 8 (portrait), 3 (upside down), sometimes a mirrored one (2, 4, 5, 7: front cameras, edited files)."""
    orientation = orientation or int(rng.choice([6, 6, 6, 8, 8, 3, 3, 2, 4, 5, 7]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = _photo(digit, rng).transpose(STORED[orientation])
    return paper.encode(stored, "JPEG", quality=int(rng.integers(60, 92)), exif=exif.tobytes())


def boxed(digit: np.ndarray, rng) -> bytes:
    """A digit written in a form's box: the box from touching the digit (or crossed by it) to a third of its height
    away, its line thinner than the pen or as thick, printed black or in a light colour; a quarter are comb
    fields, open at the top."""
    ink = paper.digit_ink(digit, int(rng.integers(48, 160)), rng)
    stroke = max(1, ink.shape[0] // 12)
    page, (left, top, right, bottom) = paper.in_field(
        ink, rng, rng.uniform(-0.03, 0.35, size=4), pad=rng.uniform(0.05, 0.5)
    )
    rules = Image.new("L", (page.shape[1], page.shape[0]), 0)
    draw = ImageDraw.Draw(rules)
    width, level = int(rng.integers(1, stroke + 2)), int(rng.choice([255, 255, 200, 150]))
    sides = [(left, bottom, right, bottom), (left, top, left, bottom), (right, top, right, bottom)]
    if rng.random() < 0.75:
        sides.append((left, top, right, top))
    for side in sides:
        draw.line(side, fill=level, width=width)
    return paper.on_page(page, rules, rng)


def underlined(digit: np.ndarray, rng) -> bytes:
    """A digit with a line under it: drawn with a ruler or by hand (a little tilted, wavering), from crossing the
    digit's foot to a third of its height below, from a little shorter than the digit to well beyond it."""
    ink = paper.digit_ink(digit, int(rng.integers(48, 160)), rng)
    height, width = ink.shape
    gap = rng.uniform(-0.05, 0.3)
    reach = rng.uniform(-0.1, 0.6, size=2) * width / height
    page, (left, top, right, bottom) = paper.in_field(
        ink, rng, np.array([reach[0], 0.1, reach[1], gap]), pad=rng.uniform(0.05, 0.5)
    )
    rules = Image.new("L", (page.shape[1], page.shape[0]), 0)
    thickness = int(rng.integers(1, max(2, height // 12) + 2))
    if rng.random() < 0.5:
        ImageDraw.Draw(rules).line((left, bottom, right, bottom), fill=255, width=thickness)
    else:
        tilt = np.tan(np.radians(rng.uniform(-4, 4)))
        xs = np.linspace(left, right, 12)
        ys = bottom + (xs - left) * tilt + rng.normal(0, 0.01 * height, xs.size).cumsum() * 0.5
        rules = pen.render([list(zip(xs, ys))], rules.size, thickness)
    return paper.on_page(page, rules, rng, angle=1.0)


def several(digits: list[np.ndarray], rng) -> bytes:
    """Two or three digits side by side, as a number is written: heights a little uneven, baselines wavering,
    the gaps between them from overlapping boxes (slanted digits, touching strokes) to half a digit."""
    height = int(rng.integers(48, 140))
    inks = [paper.digit_ink(d, max(16, int(height * rng.uniform(0.88, 1.12))), rng) for d in digits]
    gaps = [int(rng.uniform(-0.08, 0.45) * height) for _ in inks[1:]]
    width = sum(i.shape[1] for i in inks) + sum(gaps) + height
    page = np.zeros((int(height * 1.6), width), dtype=np.float32)
    x = height // 2
    for n, ink in enumerate(inks):
        y = int(height * 0.3 + rng.uniform(-0.06, 0.06) * height + height - ink.shape[0])
        region = page[y : y + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink[: region.shape[0], : region.shape[1]], out=region)
        x += ink.shape[1] + (gaps[n] if n < len(gaps) else 0)
    if rng.random() < 0.3:  # on a drawing pad's transparent canvas
        alpha = Image.fromarray((page * 255).astype(np.uint8), mode="L")
        black = Image.new("L", alpha.size, 0)
        return paper.encode(Image.merge("RGBA", [black, black, black, alpha]), "PNG")
    return paper.sheet(page, rng)


def not_a_digit(rng, kind: int | None = None) -> bytes:
    """One of non_digits.KINDS (a random one, or the one at index `kind`), in the formats and polarities digits
    come in."""
    kind = int(rng.integers(len(non_digits.KINDS))) if kind is None else kind
    if kind == 4:
        return paper.encode(non_digits.noise(rng), ["PNG", "JPEG"][int(rng.integers(2))])
    if kind == 5:
        return paper.encode(non_digits.photo_of_things(rng), "JPEG", quality=int(rng.integers(60, 92)))
    makers = [non_digits.font_letter, non_digits.pen_letter, non_digits.scribble, non_digits.shape]
    ink = non_digits.handwriting_letter(rng) if kind == 6 else makers[kind](rng)
    return paper.sent(ink, rng)


def handwriting_digit(digit: int, rng) -> bytes:
    """`digit` in a handwriting font the training never saw (the glyph bank's held-out designers), sent on a page or
    painted as the non-digits are."""
    written = handwriting.load().select(held_out=True, digits=True)
    picture = Image.fromarray(written.images[int(rng.choice(np.flatnonzero(written.labels == digit)))])
    return paper.sent(picture.resize((non_digits.HANDWRITING_PX,) * 2, Image.Resampling.BICUBIC), rng)


MAKERS = {
    "mnist": mnist_png,
    "canvas": canvas_png,
    "photo": photo_jpeg,
    "lowres": lowres_image,
    "tight": tight_crop,
    "lowres_fill": lowres_fill,
    "offcentre": offcentre,
    "rotated": rotated_photo,
    "boxed": boxed,
    "underlined": underlined,
}


def make(
    images: np.ndarray, labels: np.ndarray, per_kind: int = 100, *, seed: int = 0, kinds=KINDS
) -> list[tuple[str, int | str | None, bytes]]:
    """(kind, label, encoded image) for `per_kind` images of each kind, from MNIST test images and labels. The label
    is what a person reads: the digit; for `several` the digits left to right ("38"); None for `not_digit`."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        picks = rng.choice(len(images), size=per_kind, replace=False)
        for n, i in enumerate(picks):
            if kind == "printed":
                label = n % 10
                out.append((kind, label, printed_image(label, rng)))
            elif kind == "several":
                group = [i, *rng.choice(len(images), size=int(rng.choice([1, 1, 2])), replace=False)]
                number = "".join(str(int(labels[j])) for j in group)
                out.append((kind, number, several([np.asarray(images[j]) for j in group], rng)))
            elif kind == "not_digit":
                out.append((kind, None, not_a_digit(rng)))
            elif kind.startswith("not_digit/"):
                out.append((kind, None, not_a_digit(rng, non_digits.KINDS.index(kind.removeprefix("not_digit/")))))
            elif kind == "handwriting":
                label = n % 10
                out.append((kind, label, handwriting_digit(label, rng)))
            else:
                out.append((kind, int(labels[i]), MAKERS[kind](np.asarray(images[i]), rng)))
    return out
