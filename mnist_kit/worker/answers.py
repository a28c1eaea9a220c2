"""What the handler answers for each picture: its digit, the confidence, the ten probabilities, and the flags that
say what else a reader should know. Packed into the .mar beside the handler.

The flags (C.FLAGS), in the order they are listed in an answer:
- several_digits: the ink falls into two or more digit-sized groups side by side (preprocess.Picture.digits); the
  answer names the most prominent, and `digits` reads them all, left to right, when each reads confidently.
- not_a_digit: the network spreads its answer over the digits: trained to answer synthetic non-digits uniformly
  (mnist_kit.training.outliers), it gives no digit C.NOT_A_DIGIT_BELOW of its probability on pictures unlike any digit.
- low_confidence: the digit's probability is below C.LOW_CONFIDENCE (also counted in LowConfidencePredictions).
"""

from dataclasses import dataclass, field

import numpy as np

from mnist_kit import constants as C
from mnist_kit.worker.preprocess import Picture


@dataclass
class Answer:
    probabilities: list[float]  # ten, rounded to 6 decimals
    flags: list[str] = field(default_factory=list)
    digits: list[int] | None = None  # left to right, for several digits that each read confidently

    @property
    def digit(self) -> int:
        """The most probable digit, the first of equals (as np.argmax), without a NumPy call on a list: a shadow
        asks it twice a picture, and np.argmax on a list costs it ten times as much."""
        return self.probabilities.index(max(self.probabilities))

    @property
    def confidence(self) -> float:
        return self.probabilities[self.digit]

    def read(self) -> tuple[int, float]:
        """The digit and the confidence, the probabilities read once (`confidence` finds the digit again): what a
        runtime's counts and drift window take of each picture."""
        top = max(self.probabilities)
        return self.probabilities.index(top), top


def images(pictures: list[Picture]) -> list[np.ndarray]:
    """The 28×28s the network reads for `pictures`, in one batch: each picture's own, then the digits of those
    holding several."""
    return [p.pixels for p in pictures] + [d for p in pictures for d in p.digits]


def answers(pictures: list[Picture], probabilities: np.ndarray) -> list[Answer]:
    """Each picture's Answer from the probabilities of images(pictures), row for row."""
    own, rest = probabilities[: len(pictures)], iter(probabilities[len(pictures) :])
    out = []
    for picture, p in zip(pictures, own):
        answer = Answer(p.tolist(), flags(p, several=bool(picture.digits)))
        if picture.digits:
            groups = [next(rest) for _ in picture.digits]
            if all(not flags(g) for g in groups):
                answer.digits = [int(g.argmax()) for g in groups]
        out.append(answer)
    return out


def flags(probabilities: np.ndarray, several: bool = False) -> list[str]:
    top = float(np.max(probabilities))
    found = ["several_digits"] if several else []
    if top < C.NOT_A_DIGIT_BELOW:
        found.append("not_a_digit")
    if top < C.LOW_CONFIDENCE:
        found.append("low_confidence")
    return found
