"""Rebuild the handwriting glyph bank the default recipe trains on (mnist_kit/training/handwriting.npz): letters
and digits in handwriting fonts that ship as packages, each drawn several ways, sent through the serving
preprocessing as a PNG is when served, 28×28.

The fonts come from the npm registry (Fontsource's packages of OFL and Apache-licensed Google Fonts) and from
Debian (fonts-* packages); `npm pack` and `apt-get download` fetch them, as a user without root can. Users of
`mnist-kit train` need none of this: the bank ships with the kit. Whole designers are held out (HELD_OUT): their
fonts are in the bank for measurement only, never trained on. docs/SERVING.md lists each font, its source and its
licence.

    python scripts/make_handwriting.py [--cache ~/.cache/mnist-kit/fonts] [--variants 10]
"""

import argparse
import io
import json
import subprocess
import tarfile
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy.ndimage import gaussian_filter, map_coordinates

from mnist_kit.training.handwriting import BANK, DIGITS, LETTERS
from mnist_kit.worker import preprocess
from mnist_kit.worker.request_errors import InputError

# (family, package, font file in it, designer, licence). npm packages at NPM_VERSION; Debian's from bookworm.
NPM_VERSION = "5.3.0"
FONTS = [
    ("Architects Daughter", "npm", "architects-daughter", "Kimberly Geswein", "OFL-1.1"),
    ("Covered By Your Grace", "npm", "covered-by-your-grace", "Kimberly Geswein", "OFL-1.1"),
    ("Dawning of a New Day", "npm", "dawning-of-a-new-day", "Kimberly Geswein", "OFL-1.1"),
    ("Gloria Hallelujah", "npm", "gloria-hallelujah", "Kimberly Geswein", "OFL-1.1"),
    ("Indie Flower", "npm", "indie-flower", "Kimberly Geswein", "OFL-1.1"),
    ("La Belle Aurore", "npm", "la-belle-aurore", "Kimberly Geswein", "OFL-1.1"),
    ("Nothing You Could Do", "npm", "nothing-you-could-do", "Kimberly Geswein", "OFL-1.1"),
    ("Shadows Into Light", "npm", "shadows-into-light", "Kimberly Geswein", "OFL-1.1"),
    ("Sue Ellen Francisco", "npm", "sue-ellen-francisco", "Kimberly Geswein", "OFL-1.1"),
    ("Waiting for the Sunrise", "npm", "waiting-for-the-sunrise", "Kimberly Geswein", "OFL-1.1"),
    ("Caveat", "npm", "caveat", "Pablo Impallari (Impallari Type)", "OFL-1.1"),
    ("Coming Soon", "npm", "coming-soon", "Open Window", "Apache-2.0"),
    ("Handlee", "npm", "handlee", "Joe Prince (Admix Designs)", "OFL-1.1"),
    ("Just Another Hand", "npm", "just-another-hand", "Brian J. Bonislawsky (Astigmatic)", "Apache-2.0"),
    ("Kalam", "npm", "kalam", "Indian Type Foundry", "OFL-1.1"),
    ("Nanum Pen Script", "npm", "nanum-pen-script", "Sandoll Communications", "OFL-1.1"),
    ("Neucha", "npm", "neucha", "Jovanny Lemonad", "OFL-1.1"),
    ("Patrick Hand", "npm", "patrick-hand", "Patrick Wagesreiter", "OFL-1.1"),
    ("Homemade Apple", "npm", "homemade-apple", "Font Diner", "Apache-2.0"),
    ("Permanent Marker", "npm", "permanent-marker", "Font Diner", "Apache-2.0"),
    ("Rock Salt", "npm", "rock-salt", "Font Diner", "Apache-2.0"),
    ("Schoolbell", "npm", "schoolbell", "Font Diner", "Apache-2.0"),
    ("Reenie Beanie", "npm", "reenie-beanie", "James Grieshaber (Typeco)", "OFL-1.1"),
    ("Gochi Hand", "npm", "gochi-hand", "Huerta Tipográfica (HT Fonts)", "OFL-1.1"),
    ("Delius", "npm", "delius", "Natalia Raices", "OFL-1.1"),
    (
        "Dancing Script",
        "fonts-dancingscript",
        "DancingScript-Regular.otf",
        "Pablo Impallari (Impallari Type)",
        "OFL-1.1",
    ),
    ("Cabin Sketch", "fonts-cabinsketch", "CabinSketch-Regular.ttf", "Pablo Impallari (Impallari Type)", "OFL-1.1"),
    ("Because We Build", "fonts-bwht", "BecauseWeBuild-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Because We Connect", "fonts-bwht", "BecauseWeConnect-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Because We Create", "fonts-bwht", "BecauseWeCreate-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Because We Learn", "fonts-bwht", "BecauseWeLearn-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Because We Mentor", "fonts-bwht", "BecauseWeMentor-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Because We Organize", "fonts-bwht", "BecauseWeOrganize-Regular.otf", "Red Hat (Because We Had To)", "OFL-1.1"),
    ("Comic Neue", "fonts-comic-neue", "ComicNeue-Regular.otf", "Craig Rozynski", "OFL-1.1"),
    ("Humor Sans", "fonts-humor-sans", "Humor-Sans.ttf", "Michael Ciuffo", "OFL-1.1"),
    ("Breip", "fonts-breip", "Breip.ttf", "Adam Breipohl", "OFL-1.0"),
    ("dkg handwriting", "fonts-dkg-handwriting", "dkg.ttf", "Daniel Kahn Gillmor", "OFL-1.1 (or GPL-3+)"),
]
# A quarter of the fonts or more, by designer: measured on, never trained on.
HELD_OUT = {
    "Font Diner",
    "James Grieshaber (Typeco)",
    "Huerta Tipográfica (HT Fonts)",
    "Natalia Raices",
    "Adam Breipohl",
    "Daniel Kahn Gillmor",
    "Jovanny Lemonad",
}
SIZE = 96


def fetch(package: str, file: str, cache: Path) -> Path:
    """The font file, fetched into `cache` once: `npm pack` of Fontsource's package, or `apt-get download` of
    Debian's, unpacked without root."""
    if package == "npm":
        folder = cache / "npm" / file
        path = folder / "package" / "files" / f"{file}-latin-400-normal.woff"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            spec = f"@fontsource/{file}@{NPM_VERSION}"
            name = subprocess.run(
                ["npm", "pack", "--silent", spec], cwd=folder, check=True, capture_output=True, text=True
            ).stdout.split()[-1]
            with tarfile.open(folder / name) as tar:
                tar.extractall(folder, filter="data")
        return path
    folder = cache / "deb" / package
    found = sorted(folder.rglob(file)) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
        for deb in folder.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "root")], check=True)
        found = sorted(folder.rglob(file))
    return found[0]


def draw(font_path: Path, char: str, rng) -> Image.Image:
    """`char` in the font at a random size, stroke width, slant and turn, with pen pressure (ink that thins and
    fades along the stroke) and an elastic warp: ink on 0, SIZE px."""
    font = ImageFont.truetype(str(font_path), int(rng.integers(44, 64)))
    image = Image.new("L", (SIZE, SIZE), 0)
    canvas = ImageDraw.Draw(image)
    stroke = int(rng.choice([0, 0, 0, 1, 1, 2]))
    left, top, right, bottom = canvas.textbbox((0, 0), char, font=font, stroke_width=stroke)
    origin = ((SIZE - right - left) / 2, (SIZE - bottom - top) / 2)
    canvas.text(origin, char, 255, font, stroke_width=stroke, stroke_fill=255)
    if rng.random() < 0.25:  # a finer pen
        image = image.filter(ImageFilter.MinFilter(3))
    shear = rng.uniform(-0.35, 0.35)
    image = image.transform(
        image.size, Image.Transform.AFFINE, (1, shear, -shear * SIZE / 2, 0, 1, 0), Image.Resampling.BILINEAR
    )
    image = image.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    ink = np.asarray(image, dtype=np.float32)
    dx, dy = (smooth(ink.shape, 8, rng) * rng.uniform(0.5, 2.0) for _ in range(2))  # pixels of warp
    rows, cols = np.mgrid[0 : ink.shape[0], 0 : ink.shape[1]]
    ink = map_coordinates(ink, [rows + dy, cols + dx], order=1)
    pressure = np.clip(0.8 + 0.2 * smooth(ink.shape, 10, rng), 0.45, 1.0)
    return Image.fromarray(np.clip(ink * pressure, 0, 255).astype(np.uint8))


def glyphs(path: Path, variants: int, rng):
    """(character, 28×28) of every letter and digit in the font, `variants` drawings each, as the serving
    preprocessing reads them; none where the font lacks it, the warp lost it or it fell apart into several."""
    for char in LETTERS + DIGITS:
        for _ in range(variants):
            try:
                picture = preprocess.read_image(png(draw(path, char, rng)))
            except InputError:
                continue
            if not picture.digits:
                yield char, picture.pixels


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def smooth(shape, sigma: float, rng) -> np.ndarray:
    """A smooth random field of mean 0 and standard deviation 1, varying over about `sigma` pixels."""
    field = gaussian_filter(rng.normal(0, 1, shape), sigma)
    return (field - field.mean()) / field.std()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mnist-kit" / "fonts")
    parser.add_argument("--variants", type=int, default=10, help="Drawings of each character in each font.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BANK)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    images, chars, font_index, fonts = [], [], [], []
    with click.progressbar(list(enumerate(FONTS)), label="fonts") as bar:
        for index, (family, package, file, designer, licence) in bar:
            path = fetch(package, file, args.cache)
            source = f"npm @fontsource/{file}@{NPM_VERSION}" if package == "npm" else f"Debian {package}"
            held_out = designer in HELD_OUT
            fonts.append(
                {"family": family, "designer": designer, "licence": licence, "source": source, "held_out": held_out}
            )
            for char, picture in glyphs(path, args.variants, rng):
                images.append(picture)
                chars.append(ord(char))
                font_index.append(index)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=np.stack(images),
        chars=np.array(chars, dtype=np.uint16),
        fonts=np.array(font_index, dtype=np.uint8),
        about=np.array(json.dumps(fonts)),
    )
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(args.out)
    held = sum(f["held_out"] for f in fonts)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {len(images)} glyphs of {len(fonts)} fonts ({held} held out), {size:,} bytes")


if __name__ == "__main__":
    main()
