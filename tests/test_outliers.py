"""The synthetic non-digits training shows the network (training/outliers.py), and how they stay apart from the held-out
ones that measure the not_a_digit flag (evaluation/kinds.py)."""

import numpy as np

from mnist_kit.evaluation import kinds, non_digits
from mnist_kit.training import outliers
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
