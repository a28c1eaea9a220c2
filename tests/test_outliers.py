"""The synthetic non-digits training shows the network (training/outliers.py), and how they stay apart from the held-out
ones that measure the not_a_digit flag (evaluation/kinds.py)."""

import numpy as np

from mnist_kit.evaluation import kinds, non_digits
from mnist_kit.training import handwriting, outliers
from mnist_kit.worker.masks import INK


def test_synthetic_non_digits_are_served_pictures_the_same_for_a_seed():
    first, again = outliers.make(40, seed=3), outliers.make(40, seed=3)
    assert first.shape == (40, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert ((first >= INK).sum((1, 2)) > 0).all()


def test_every_maker_draws_some_ink():
    rng = np.random.default_rng(0)
    for maker in dict.fromkeys(outliers.MAKERS):
        assert (np.asarray(maker(rng)) >= INK).any(), maker.__name__


def test_a_marked_loop_has_ink_inside_its_outline():
    """Inside: within 14 px of the centre, where every mark starts and no ellipse outline reaches."""
    yy, xx = np.mgrid[: outliers.SIZE, : outliers.SIZE] - (outliers.SIZE - 1) / 2
    middle = np.hypot(xx, yy) < 14
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert (np.asarray(outliers.marked_loop(rng))[middle] >= INK).any()


def test_training_draws_its_letters_and_digits_in_faces_the_held_out_ones_never_use():
    assert not set(outliers.FONTS) & set(non_digits.LETTER_FONTS)
    assert not set(outliers.DIGIT_FONTS) & set(kinds.FONTS)


def test_the_handwriting_bank_holds_every_letter_and_digit_of_each_font_as_served_pictures():
    glyphs = handwriting.load()
    assert glyphs.images.dtype == np.uint8 and glyphs.images.shape[1:] == (28, 28)
    for index, font in enumerate(glyphs.fonts):
        drawn = {chr(c) for c in glyphs.chars[glyphs.font == index]}
        assert drawn == set(handwriting.LETTERS + handwriting.DIGITS), font["family"]
    assert ((glyphs.images >= INK).sum((1, 2)) > 0).all()


def test_the_handwriting_fonts_come_from_several_designers_and_a_quarter_are_held_out_by_designer():
    fonts = handwriting.load().fonts
    designers = {f["designer"] for f in fonts}
    held = {f["designer"] for f in fonts if f["held_out"]}
    assert len(fonts) >= 20 and len(designers) >= 10
    assert sum(f["held_out"] for f in fonts) >= len(fonts) / 4
    assert not held & {f["designer"] for f in fonts if not f["held_out"]}  # a designer is held out whole
    assert all(f["licence"] and f["source"] for f in fonts)


def test_letters_written_as_digits_are_not_in_the_bank():
    assert not set(handwriting.LETTERS) & set("OoIlijSsZzGbgq0123456789")


def test_the_held_out_kinds_use_only_the_held_out_fonts():
    glyphs = handwriting.load()
    held, trained = glyphs.select(held_out=True, digits=False), glyphs.select(held_out=False, digits=False)
    assert all(glyphs.fonts[f]["held_out"] for f in set(held.font.tolist()))
    assert not any(glyphs.fonts[f]["held_out"] for f in set(trained.font.tolist()))
    shown = np.asarray(non_digits.handwriting_letter(np.random.default_rng(0)).resize((28, 28)))
    assert shown.shape == (28, 28)
