"""The pad's library: strokes and their picture (mnist_kit.ui.drawing), and what a pad says
(mnist_kit.ui.pad_client)."""

import io

import numpy as np
from handwriting import every_shape
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.serving import client
from mnist_kit.ui.drawing import Drawing
from mnist_kit.ui.pad_client import Reader, Reading, seen, shown, verdict


def drawn(written) -> Drawing:
    drawing = Drawing()
    for stroke in written.strokes:
        drawing.begin(*stroke[0], written.brush)
        for point in stroke[1:]:
            drawing.extend(*point)
    return drawing


def test_undo_takes_back_the_last_stroke_only():
    four = next(w for w in every_shape() if w.label == 4)
    drawing = drawn(four)
    drawing.undo()
    assert [s.points for s in drawing.strokes] == [four.strokes[0]]
    drawing.clear()
    assert drawing.empty


def test_the_picture_sent_is_a_pad_sized_png_of_dark_strokes_on_white():
    image = Image.open(io.BytesIO(drawn(every_shape()[0]).png()))
    pixels = np.asarray(image)
    assert image.format == "PNG" and image.size == (C.PAD_SIZE, C.PAD_SIZE)
    assert pixels[0, 0] == 255 and pixels.min() == 0


def test_a_brush_draws_as_wide_as_its_width():
    drawing = Drawing()
    drawing.begin(40, 100, 20)
    drawing.extend(240, 100)
    column = np.asarray(drawing.image())[:, 140]
    assert (column == 0).sum() in (20, 21)


def test_what_the_model_saw_is_the_handlers_28_by_28_with_the_ink_centred():
    pixels = np.array(seen(drawn(every_shape()[0]).png()))
    assert pixels.shape == (28, 28)
    assert pixels[0].max() == 0 and pixels[:, 0].max() == 0  # MNIST's empty border
    rows, cols = np.nonzero(pixels)
    assert abs(np.average(rows, weights=pixels[rows, cols]) - 14) < 1.5


def test_a_blank_pad_has_nothing_for_the_model_to_see():
    assert seen(Drawing().png()) is None


def reading(confidence: float, flags=(), digits=None) -> Reading:
    low = confidence < C.LOW_CONFIDENCE
    flags = [*flags, "low_confidence"] if low else list(flags)
    return Reading(7, confidence, [0.0] * 10, None, "http://x", "mnist", "1.0", 5.0, low, flags, digits)


def test_an_answer_below_the_kits_confidence_threshold_says_it_is_not_sure():
    assert verdict(reading(0.95)) == "Read as 7."
    assert verdict(reading(0.6)).startswith("Not sure: only 60.0 % for 7, below the 90 % the kit counts as confident.")


def test_a_picture_that_is_not_a_digit_is_said_so_and_shown_as_a_question_mark():
    spread = reading(0.12, ["not_a_digit"])
    assert verdict(spread).startswith("This does not look like a digit") and shown(spread) == "?"
    assert shown(reading(0.95)) == "7"


def test_several_digits_are_said_so_with_the_digits_read():
    assert verdict(reading(0.97, ["several_digits"], [3, 7])).startswith("Several digits side by side: read as 3 7;")
    assert "the one with the most ink, 7" in verdict(reading(0.97, ["several_digits"]))


def test_each_failure_gets_a_plain_message():
    reader = Reader("http://127.0.0.1:1", "mnist")
    refused = client.ClientError("cannot reach TorchServe at http://127.0.0.1:1: [Errno 111] Connection refused")
    assert reader.failure(refused)[0] == 502
    assert reader.failure(refused)[1].startswith("No server is running at http://127.0.0.1:1 (cannot connect).")
    unreadable = client.ClientError("key_file.json is not a TorchServe key file")
    assert reader.failure(unreadable) == (500, "key_file.json is not a TorchServe key file")
    assert "has no model 'mnist' loaded" in reader.failure(client.ClientError("x", 404, "Model not found: mnist"))[1]
    assert reader.failure(client.ClientError("x", 400, "blank image: no digit found")) == (
        400,
        "blank image: no digit found",
    )
    assert reader.failure(client.ClientError("x", 507, "worker died")) == (507, "The server answered 507: worker died")
