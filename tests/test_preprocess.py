"""Preprocessing (worker/preprocess.py): any image in, MNIST's 28×28 out, and a clear error for what cannot be read."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from mnist_kit import constants as C
from mnist_kit.evaluation import kinds
from mnist_kit.training import fonts
from mnist_kit.worker import masks, preprocess, printed_lines, request_bodies
from mnist_kit.worker.request_errors import InputError


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A small PNG whose header declares `width`×`height` pixels: a decompression bomb unless checked first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def seven(digits) -> np.ndarray:
    return np.asarray(Image.open(digits[7]))


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    mass = pixels.sum()
    return ((pixels.sum(1) * np.arange(28)).sum() / mass, (pixels.sum(0) * np.arange(28)).sum() / mass)


def test_normalize_uses_the_training_mean_and_std():
    x = preprocess.normalize(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    assert x[0, 0, 0].tolist() == pytest.approx([-C.MNIST_MEAN / C.MNIST_STD, (1 - C.MNIST_MEAN) / C.MNIST_STD])


def test_training_normalizes_exactly_as_serving(seven):
    from mnist_kit.training.mnist import normalize_tensor

    images = np.stack([seven, 255 - seven, np.arange(28 * 28).reshape(28, 28) % 256]).astype(np.uint8)
    assert np.array_equal(normalize_tensor(torch.from_numpy(images)).numpy(), preprocess.model_input(list(images)))


def test_the_table_is_what_the_float_arithmetic_gives(seven):
    expected = (torch.arange(256).float() / 255.0 - C.MNIST_MEAN) / C.MNIST_STD
    assert np.allclose(preprocess.NORMALIZED, expected.numpy(), rtol=0, atol=1e-6)


def test_mnist_format_pngs_take_the_fast_path_with_the_same_pixels_as_the_general_one(digits):
    for path in digits:
        data = path.read_bytes()
        assert np.array_equal(preprocess.mnist_png(data), np.asarray(Image.open(path))), path


@pytest.mark.parametrize("where", ["in its image data", "cut short"])
def test_a_damaged_mnist_png_leaves_the_fast_path_and_is_refused_by_the_general_one(digits, where):
    data = bytearray(digits[7].read_bytes())
    idat = data.index(b"IDAT")
    if where == "in its image data":
        data[idat + 10] ^= 0xFF
    else:
        data = data[: idat + 12]
    assert preprocess.mnist_png(bytes(data)) is None
    with pytest.raises(InputError, match="corrupt or truncated PNG image"):
        preprocess.read_image(bytes(data))


def test_an_mnist_png_with_a_wrong_crc_leaves_the_fast_path_and_the_general_one_decides(digits):
    data = bytearray(digits[7].read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 4 + int.from_bytes(data[idat - 4 : idat], "big")] ^= 0xFF
    assert preprocess.mnist_png(bytes(data)) is None
    assert np.array_equal(preprocess.read_image(bytes(data)).pixels, np.asarray(Image.open(digits[7])))


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (28, 28)),  # blank
        Image.new("L", (28, 28), 255),  # ink at the border: not MNIST's framing
        Image.new("RGB", (28, 28)),
        Image.new("L", (29, 28)),
    ],
)
def test_other_pngs_take_the_general_path(image):
    assert preprocess.mnist_png(encode(image)) is None


def test_a_gray_png_with_transparency_takes_the_general_path(seven):
    assert preprocess.mnist_png(encode(Image.fromarray(seven), transparency=0)) is None


def test_a_corrupt_mnist_format_png_gets_the_general_paths_error(digits):
    data = digits[7].read_bytes()
    with pytest.raises(InputError) as e:
        preprocess.read_image(data[:60])
    assert e.value.status == 400


def test_an_mnist_png_stays_almost_unchanged(digits, seven):
    pixels = preprocess.read_image(digits[7].read_bytes()).pixels
    assert np.abs(pixels.astype(int) - seven).mean() < 3


def test_output_is_28_by_28_with_the_ink_centred_like_mnist(seven):
    off_centre = Image.new("L", (300, 200))
    off_centre.paste(Image.fromarray(seven).resize((56, 56)), (220, 10))
    pixels = preprocess.read_image(encode(off_centre)).pixels
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.6)
    rows, cols = np.nonzero(pixels > 0)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= C.DIGIT_BOX + 1


def test_dark_ink_on_light_paper_reads_like_light_ink_on_dark(seven):
    light = preprocess.read_image(encode(Image.fromarray(255 - seven))).pixels
    dark = preprocess.read_image(encode(Image.fromarray(seven))).pixels
    assert np.abs(light.astype(int) - dark).mean() < 3


def test_black_ink_on_a_transparent_canvas_is_found(seven):
    alpha = Image.fromarray(seven).resize((280, 280))
    black = Image.new("L", (280, 280), 0)
    pixels = preprocess.read_image(encode(Image.merge("RGBA", [black, black, black, alpha]))).pixels
    assert pixels.sum() > 0 and centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.6)


def test_uneven_paper_and_noise_are_removed(seven):
    height, width = 300, 400
    shade = np.linspace(120, 250, width, dtype=np.float32)[None, :].repeat(height, 0)
    ink = np.zeros((height, width), np.float32)
    ink[100:184, 150:234] = np.asarray(Image.fromarray(seven).resize((84, 84)), dtype=np.float32) / 255
    photo = shade * (1 - 0.8 * ink) + np.random.default_rng(0).normal(0, 4, (height, width))
    pixels = preprocess.read_image(
        encode(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), "JPEG", quality=75)
    ).pixels
    reference = preprocess.read_image(encode(Image.fromarray(seven))).pixels
    assert np.abs(pixels.astype(int) - reference).mean() < 25
    assert pixels[:, :3].sum() == 0 and pixels[:3].sum() == 0, "shading left at the edges"


def tight_crop(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@pytest.mark.parametrize("scale", [1, 3, 8])
@pytest.mark.parametrize("dark_on_light", [True, False])
def test_a_digit_cropped_to_its_ink_reads_like_the_framed_digit(seven, scale, dark_on_light):
    crop = Image.fromarray(tight_crop(seven))
    crop = crop.resize((crop.width * scale, crop.height * scale), Image.Resampling.BILINEAR)
    if dark_on_light:
        crop = crop.point(lambda v: 255 - v)
    pixels = preprocess.read_image(encode(crop)).pixels
    reference = preprocess.read_image(encode(Image.fromarray(seven).resize((280, 280)))).pixels
    assert pixels.sum() > 0.6 * reference.sum(), "ink touching the edges was erased"
    assert np.abs(pixels.astype(int) - reference).mean() < 12


def test_a_transparent_tight_crop_keeps_its_ink(seven):
    alpha = Image.fromarray(tight_crop(seven)).resize((60, 80))
    black = Image.new("L", alpha.size, 0)
    pixels = preprocess.read_image(encode(Image.merge("RGBA", [black, black, black, alpha]))).pixels
    assert centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.6)
    assert (pixels > 128).sum() > 0.5 * (seven > 128).sum()


def test_an_8_by_8_digit_of_16_grey_levels_is_read_at_its_own_size_and_scaled_up(seven):
    small = np.asarray(Image.fromarray(tight_crop(seven)).resize((8, 8), Image.Resampling.BOX))
    small = (np.round(small / 255 * 16) * 255 / 16).astype(np.uint8)
    reference = preprocess.read_image(encode(Image.fromarray(small).resize((128, 128)))).pixels
    for image in (Image.fromarray(small), Image.fromarray(255 - small).resize((64, 64), Image.Resampling.NEAREST)):
        pixels = preprocess.read_image(encode(image)).pixels
        assert pixels.sum() > 0 and np.abs(pixels.astype(int) - reference).mean() < 25


def test_ink_against_one_edge_with_a_wide_margin_is_centred(seven):
    frame = Image.new("L", (400, 400), 255)
    frame.paste(Image.fromarray(255 - tight_crop(seven)).resize((57, 72)), (0, 150))
    pixels = preprocess.read_image(encode(frame, "JPEG", quality=85)).pixels
    reference = preprocess.read_image(encode(Image.fromarray(seven))).pixels
    assert centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.6)
    assert np.abs(pixels.astype(int) - reference).mean() < 25


def test_the_paper_level_ignores_ink_that_covers_most_of_the_picture():
    rng = np.random.default_rng(0)
    paper = rng.normal(20, 3, 400)
    level, noise, share = preprocess.paper_level(
        np.concatenate([paper, np.full(600, 230.0), np.linspace(20, 230, 200)])
    )
    assert level == pytest.approx(20, abs=3) and noise == pytest.approx(3, abs=1.5) and share < 0.5


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_every_colour_mode_is_read(seven, mode):
    image = Image.fromarray(255 - seven).resize((56, 56))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    else:
        image = image.convert(mode)
    pixels = preprocess.read_image(encode(image, "TIFF" if mode == "I;16" else "PNG")).pixels
    assert pixels.sum() > 0 and centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.6)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_supported_format_is_read(seven, fmt):
    pixels = preprocess.read_image(encode(Image.fromarray(seven).convert("RGB"), fmt)).pixels
    assert pixels.sum() > 0


def test_a_palette_png_with_a_transparent_background_is_read(seven):
    image = Image.fromarray(255 - seven).convert("P")
    image.info["transparency"] = int(np.asarray(image)[0, 0])
    assert preprocess.read_image(encode(image, transparency=image.info["transparency"])).pixels.sum() > 0


def test_a_large_jpeg_is_decoded_reduced_not_at_full_size():
    photo = Image.new("L", (4000, 3000), 230)
    image = preprocess.decode(encode(photo, "JPEG"))
    assert image.size == (500, 375)


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 400, "empty request"),
        (b"\x00" * 100, 400, "not a decodable image"),
        (b"GIF89a", 400, "not a decodable image"),
        (png_header(30000, 30000), 413, "image too large"),
        (png_header(65535, 65535), 413, "image too large"),
        (png_header(600, 400)[:40], 400, "not a decodable image"),
        (png_header(600, 400), 400, "corrupt or truncated PNG"),
        (png_header(0, 10), 400, "not a decodable image"),
    ],
)
def test_bad_bytes_get_the_right_status_and_a_message(data, status, message):
    with pytest.raises(InputError, match=message) as error:
        request_bodies.read_plain({"body": data}, "image/png")
    assert error.value.status == status


def test_a_truncated_png_is_a_400(digits):
    data = encode(Image.fromarray(np.asarray(Image.open(digits[8]))).resize((200, 200)))
    with pytest.raises(InputError, match="corrupt or truncated PNG") as error:
        request_bodies.read_plain({"body": data[: len(data) // 2]}, "image/png")
    assert error.value.status == 400


def test_a_blank_image_is_a_400_naming_it():
    with pytest.raises(InputError, match="blank image") as error:
        preprocess.read_image(encode(Image.new("RGB", (100, 100), (200, 180, 160))))
    assert error.value.status == 400


def test_an_unsupported_image_format_is_a_415():
    with pytest.raises(InputError, match="unsupported image format") as error:
        preprocess.read_image(encode(Image.new("L", (28, 28)), "PPM"))
    assert error.value.status == 415


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "video/mp4"])
def test_a_content_type_that_is_neither_image_nor_json_is_a_415(digits, content_type):
    with pytest.raises(InputError, match="unsupported content type") as error:
        request_bodies.read_plain({"body": digits[0].read_bytes()}, content_type)
    assert error.value.status == 415


@pytest.mark.parametrize(
    "row, content_type",
    [
        (lambda b: {"body": b}, "image/png"),
        (lambda b: {"body": b}, None),
        (lambda b: {"body": b}, "application/octet-stream"),
        (lambda b: {"data": b}, "image/png"),
        (lambda b: {"file": b}, "image/png"),
        (lambda b: {"body": {"data": base64.b64encode(b).decode()}}, "application/json"),
    ],
)
def test_request_formats_all_give_the_same_pixels(digits, row, content_type):
    data = digits[3].read_bytes()
    expected = preprocess.read_image(data).pixels
    assert np.array_equal(request_bodies.read_plain(row(data), content_type).pixels, expected)


def test_a_json_28_by_28_array_is_read_like_the_image(seven):
    pixels = request_bodies.read_plain({"body": seven.tolist()}, "application/json").pixels
    assert np.array_equal(pixels, preprocess.read_image(encode(Image.fromarray(seven))).pixels)


@pytest.mark.parametrize(
    "body, message",
    [
        ([[0] * 27] * 28, "28×28"),
        ([[0] * 28] * 28, "blank image"),
        ([["a"] * 28] * 28, "28×28 numbers"),
        ({"image": "x"}, 'JSON must be {"data"'),
        ({"data": "not base64!"}, "not valid base64"),
        ({"data": base64.b64encode(b"not an image").decode()}, "not a decodable image"),
        (b"{not json", "not valid JSON"),
        (42, "JSON must be"),
    ],
)
def test_bad_json_gets_a_400_naming_the_problem(body, message):
    with pytest.raises(InputError, match=message) as error:
        request_bodies.read_plain({"body": body}, "application/json")
    assert error.value.status == 400


# Phone photos stored sideways (EXIF orientation)


def page(digit: np.ndarray, scale: int = 5, margin: int = 60) -> Image.Image:
    """A digit written large on a light page: dark ink, a wide margin."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    sheet = Image.new("L", (28 * scale + 2 * margin, 28 * scale + 2 * margin), 255)
    sheet.paste(big, (margin, margin))
    return sheet


def tagged(image: Image.Image, fmt: str, orientation: int) -> bytes:
    """`image` stored as a camera stores it for `orientation`, with the tag that turns it back upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = image.transpose(kinds.STORED[orientation]) if orientation > 1 else image
    return encode(stored.convert("RGB") if fmt == "JPEG" else stored, fmt, exif=exif.tobytes())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_upright_before_anything_else(seven, fmt, orientation):
    upright = preprocess.read_image(encode(page(seven), "PNG")).pixels
    pixels = preprocess.read_image(tagged(page(seven), fmt, orientation)).pixels
    assert np.abs(pixels.astype(int) - upright).mean() < 6


def test_a_28_by_28_png_with_an_orientation_tag_leaves_the_mnist_fast_path(seven):
    data = tagged(Image.fromarray(seven), "PNG", 3)
    assert preprocess.mnist_png(data) is None
    assert np.abs(preprocess.read_image(data).pixels.astype(int) - seven).mean() < 8


# Form fields and rules


def framed(digit: np.ndarray, *, box: bool = False, underline: bool = False, width: int = 3) -> bytes:
    """The digit on a page inside a form's box, or over an underline, drawn with a ruler."""
    sheet = page(digit)
    draw = ImageDraw.Draw(sheet)
    side = sheet.width
    if box:
        draw.rectangle((30, 30, side - 30, side - 30), outline=0, width=width)
    if underline:
        draw.line((25, side - 50, side - 25, side - 50), fill=0, width=width)
    return encode(sheet)


@pytest.mark.parametrize("kind", ["box", "underline"])
def test_a_forms_box_or_an_underline_is_taken_off_before_cropping(digits, kind):
    for path in digits:
        digit = np.asarray(Image.open(path))
        plain = preprocess.read_image(encode(page(digit))).pixels
        pixels = preprocess.read_image(framed(digit, box=kind == "box", underline=kind == "underline")).pixels
        assert np.abs(pixels.astype(int) - plain).mean() < 8, path


def test_a_digits_own_straight_strokes_stay(digits):
    """A 7's bar, a 2's foot, a 1 alone, a 4's bar and a 5's flag: every sample digit loses nothing, printed ones
    with serifs and bars neither."""
    for path in digits:
        ink = preprocess.find_ink(np.asarray(page(np.asarray(Image.open(path))), dtype=np.float32))
        assert np.array_equal(printed_lines.remove_rules(ink), ink), path
    font = ImageFont.truetype(str(fonts.font_dir() / "DejaVuSerif.ttf"), 120)
    for digit in "1247":
        image = Image.new("L", (160, 160), 255)
        ImageDraw.Draw(image).text((30, 5), digit, fill=0, font=font)
        ink = preprocess.find_ink(np.asarray(image, dtype=np.float32))
        assert np.array_equal(printed_lines.remove_rules(ink), ink), digit


# Several digits


def side_by_side(*arrays: np.ndarray, gap: int = 30) -> bytes:
    pages = [page(a, margin=20) for a in arrays]
    sheet = Image.new("L", (sum(p.width for p in pages) + gap * (len(pages) - 1), pages[0].height), 255)
    x = 0
    for p in pages:
        sheet.paste(p, (x, 0))
        x += p.width + gap
    return encode(sheet)


def test_digits_side_by_side_are_each_read_left_to_right(digits):
    three, eight = (np.asarray(Image.open(digits[d])) for d in (3, 8))
    picture = preprocess.read_image(side_by_side(three, eight))
    assert len(picture.digits) == 2
    blank = np.zeros_like(three)
    for pixels, alone in zip(picture.digits, (side_by_side(three, blank), side_by_side(blank, eight))):
        assert np.abs(pixels.astype(int) - preprocess.read_image(alone).pixels).mean() < 4
    assert any(picture.pixels is d for d in picture.digits)  # the answer names one of them


def test_the_most_ink_names_the_digit_of_several(digits):
    one, eight = (np.asarray(Image.open(digits[d])) for d in (1, 8))
    picture = preprocess.read_image(side_by_side(one, eight))
    assert picture.pixels is picture.digits[1]


@pytest.mark.parametrize("digit", range(10))
def test_one_digit_is_one_digit(digits, digit):
    assert preprocess.read_image(encode(page(np.asarray(Image.open(digits[digit]))))).digits == []


def test_a_speck_beside_a_digit_is_no_second_digit(seven):
    sheet = page(seven)
    ImageDraw.Draw(sheet).ellipse((sheet.width - 40, 100, sheet.width - 32, 108), fill=0)
    assert preprocess.read_image(encode(sheet)).digits == []


def test_connected_components_label_every_8_connected_piece():
    mask = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 0, 1, 0, 1],
            [1, 0, 0, 0, 0],
            [1, 0, 1, 1, 0],
        ],
        dtype=bool,
    )
    labels, count = masks.components(mask)
    assert count == 4  # the diagonal joins the top left pair to (1, 2)
    assert labels[0, 0] == labels[0, 1] == labels[1, 2] and labels[2, 0] == labels[3, 0]
    assert len({labels[0, 0], labels[0, 4], labels[2, 0], labels[3, 2]}) == 4 and labels[3, 2] == labels[3, 3]


def test_long_runs_keep_only_runs_at_least_that_long():
    mask = np.array([[1, 1, 1, 0, 1, 1], [0, 1, 1, 1, 1, 0]], dtype=bool)
    assert masks.long_runs(mask, 3).astype(int).tolist() == [[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]]
    assert masks.long_runs(mask, 2, axis=0).astype(int).tolist() == [[0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 1, 0]]
