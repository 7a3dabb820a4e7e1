"""Photos and drawings -> the digits in them (see docs/pictures.md).

:func:`read_picture` finds the sheet, the ink and each digit and returns MNIST-style crops with their boxes
(no model needed); :func:`classify` / :func:`read_digits` add the model's probabilities and the "not a digit"
refusal; :class:`PictureFiles` is the predict set of ``predict --data.predict_path``.
"""

from mnist_lit.pictures.dataset import PictureFiles
from mnist_lit.pictures.read import PictureDigits, read_picture
from mnist_lit.pictures.verdict import MIN_CONFIDENCE, DigitsReading, classify, read_digits

__all__ = [
    "MIN_CONFIDENCE",
    "DigitsReading",
    "PictureDigits",
    "PictureFiles",
    "classify",
    "read_digits",
    "read_picture",
]
