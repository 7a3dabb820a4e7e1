"""The model's side of reading a picture: classify the crops, refuse what the model does not recognise as a digit.

Kept apart from the crops (:mod:`mnist_lit.pictures.read`) so that it works with any model: it takes the
probabilities, or a function that computes them, ``probs_fn(uint8 (K, 1, 28, 28)) -> float32 (K, 10)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mnist_lit.pictures.digitness import MIN_DIGITNESS, digit_probability
from mnist_lit.pictures.read import PictureDigits

#: A crop whose most likely digit has a softmax probability below this is "not a digit". Calibrated on the
#: 3,000 validation images of ``configs/mnist.yaml`` on ``mnist-10k`` (docs/pictures.md): the tutorial's
#: network gives at least this to about 99.7% of real digits.
MIN_CONFIDENCE = 0.35

ProbsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DigitsReading:
    """What a picture says.

    Attributes:
        digits: the digits read left to right (``"2026"``), ``""`` when refused.
        confidences: per digit, the probability of the digit read (float, 0-1).
        probs: float32 (K, 10), the probabilities of every crop (K == 0 when no crop was found).
        error: ``""`` or the one-line reason, starting with the picture's name.
    """

    digits: str
    confidences: list[float]
    probs: torch.Tensor
    error: str = ""

    @property
    def pred(self) -> int | None:
        """The digit when the picture holds exactly one, else None."""
        return int(self.digits) if len(self.digits) == 1 else None

    @property
    def confidence(self) -> float | None:
        """The probability that every digit read is right: the product of the per-digit confidences (for
        one digit, its probability, as ``pred``'s confidence has always been); None when refused."""
        if not self.digits:
            return None
        return math.prod(self.confidences)


def _which(i: int, count: int) -> str:
    return "the mark" if count == 1 else f"mark {i + 1} of {count}"


def _letter_refusal(picture: PictureDigits, min_digitness: float, digitness: torch.Tensor | None) -> str:
    """ "" or the reason the first crop the "digit or not" network (:mod:`mnist_lit.pictures.digitness`) gives a
    P(digit) under ``min_digitness`` is refused (a printed letter the MNIST network is sure is a digit);
    ``digitness`` is that P(digit) when already computed, else it is computed here."""
    if min_digitness <= 0 or not len(picture.pixels):
        return ""
    digitness = digit_probability(picture.pixels) if digitness is None else digitness
    low = torch.nonzero(digitness < min_digitness).flatten()
    if not len(low):
        return ""
    i = int(low[0])
    return (
        f"{picture.name}: not a digit: {_which(i, len(picture.pixels))} looks like a letter, not a digit "
        f"(the digit-or-not check gives it {float(digitness[i]):.1e}, under the {min_digitness:.0e} real digits get)"
    )


def read_digits(
    picture: PictureDigits,
    probs: torch.Tensor,
    min_confidence: float = MIN_CONFIDENCE,
    min_digitness: float = MIN_DIGITNESS,
    digitness: torch.Tensor | None = None,
) -> DigitsReading:
    """Turn the crops' probabilities into the number read, or a refusal.

    A picture is refused as a whole when :func:`mnist_lit.pictures.read.read_picture` found no digit, when
    any crop's top probability is under ``min_confidence``, or when the "digit or not" network
    (:func:`mnist_lit.pictures.digitness.digit_probability`) gives any crop a P(digit) under ``min_digitness``
    (a number with one unreadable mark is not read: a wrong number is worse than none).

    Args:
        picture: from :func:`mnist_lit.pictures.read.read_picture`.
        probs: float32 (K, 10), the model's softmax over the K crops in ``picture.pixels``.
        min_confidence: the refusal threshold (default :data:`MIN_CONFIDENCE`).
        min_digitness: the "digit or not" threshold (default
            :data:`~mnist_lit.pictures.digitness.MIN_DIGITNESS`); 0 turns the check off.
        digitness: float32 (K,), P(digit) of each crop by that network when the caller has already computed it
            (``serve`` scores the crops of concurrent requests in one batch); None: computed here when needed.

    Raises:
        ValueError: ``probs`` does not have one row of 10 per crop, or ``digitness`` one value per crop.
    """
    count = len(picture.pixels)
    if tuple(probs.shape) != (count, 10):
        raise ValueError(f"expected probabilities of shape ({count}, 10) for {count} crops, got {tuple(probs.shape)}")
    if digitness is not None and tuple(digitness.shape) != (count,):
        raise ValueError(f"expected {count} digitness values for {count} crops, got shape {tuple(digitness.shape)}")
    probs = probs.detach().float().cpu()
    if picture.refusal:
        return DigitsReading("", [], probs, picture.refusal)
    top, digits = probs.max(dim=1)
    low = [i for i in range(count) if float(top[i]) < min_confidence]
    if low:
        i = low[0]
        return DigitsReading(
            "",
            [],
            probs,
            f"{picture.name}: not a digit: {_which(i, count)} looks like no digit to the model "
            f"(best guess {int(digits[i])} at {float(top[i]):.0%}, under the "
            f"{min_confidence:.0%} a real digit gets)",
        )
    letter = _letter_refusal(picture, min_digitness, digitness)
    if letter:
        return DigitsReading("", [], probs, letter)
    return DigitsReading("".join(str(int(d)) for d in digits), [float(t) for t in top], probs)


def classify(
    picture: PictureDigits,
    probs_fn: ProbsFn,
    min_confidence: float = MIN_CONFIDENCE,
    min_digitness: float = MIN_DIGITNESS,
) -> DigitsReading:
    """:func:`read_digits` with the probabilities computed by ``probs_fn`` (uint8 (K, 1, 28, 28) -> float32 (K, 10)),
    which is not called when there is no crop."""
    if len(picture.pixels) == 0:
        return read_digits(picture, torch.zeros(0, 10), min_confidence, min_digitness)
    with torch.inference_mode():
        return read_digits(picture, probs_fn(picture.pixels), min_confidence, min_digitness)
