"""Photos and drawings -> the digits in them (see docs/pictures.md).

:mod:`~mnist_lit.pictures.decode` opens any picture file within a pixel limit; :func:`preprocess_image_uint8`
(:mod:`~mnist_lit.pictures.frame`) turns a picture of one clean digit into MNIST pixels (MNIST's centring);
:func:`read_picture` finds the sheet, the ink and each digit and returns MNIST-style crops with their boxes
(no model needed); :func:`classify` / :func:`read_digits` add the model's probabilities and the "not a digit"
refusals, one of them by a small separately trained "digit or not" network (:mod:`~mnist_lit.pictures.digitness`,
trained by :mod:`~mnist_lit.pictures.train_digitness` on :mod:`~mnist_lit.pictures.glyphs`); :class:`PictureFiles`
is the predict set of :class:`PicturesDataModule` (``predict --data PicturesDataModule``).
"""

from mnist_lit.pictures.datamodule import PicturesDataModule
from mnist_lit.pictures.dataset import PictureFiles, list_images
from mnist_lit.pictures.frame import preprocess_image_uint8
from mnist_lit.pictures.read import PictureDigits, read_picture
from mnist_lit.pictures.verdict import MIN_CONFIDENCE, DigitsReading, classify, read_digits

__all__ = [
    "MIN_CONFIDENCE",
    "DigitsReading",
    "PictureDigits",
    "PictureFiles",
    "PicturesDataModule",
    "classify",
    "list_images",
    "preprocess_image_uint8",
    "read_digits",
    "read_picture",
]
