"""Long, thin pictures made of real MNIST test digits (../shared/data/mnist-10k): a strip of 40 digits side by side
(1448x40 px, black ink on white or white on black), the same digits one above another (40x1448), a number in a long
blank strip, and hostile strips thousands of pixels long.

The reader used to bring a picture's longest side to 320 px whatever its shape, so a 1448x40 strip was analysed at
320x9 px: one mark was found and the strip was answered with success as one digit ("2" at 37%). A strip of more
digits than a number has must be refused, a number in a long strip read digit by digit, a column of digits refused
(marks on several lines): never a wrong number with success. The fast tests read the pictures without a model (the
crops are compared with the digits drawn); the slow ones add the shared trained run's model and ``serve``'s API.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split
from mnist_lit.pictures import classify, read_picture
from mnist_lit.pictures.decode import load_gray
from mnist_lit.pictures.ink import ink_map_of_gray
from mnist_lit.pictures.worksize import MIN_STRIP_SIDE, WORK_PIXELS, WORK_SIDE, work_shape

#: First test digits of strips of 40 that were each answered as one digit with success, both ways round.
STARTS = (160, 200, 240, 400)
STRIP_KINDS = [(start, vertical, dark) for start in STARTS for vertical in (False, True) for dark in (True, False)]


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    return images.numpy()[:, 0], labels.numpy()


def strip(digits: np.ndarray, vertical: bool = False) -> np.ndarray:
    """uint8 white on black: each 28x28 digit in a 36x40 cell (4 px along the strip, 6 px across), 4 px more at
    both ends; side by side (40 digits: 1448x40) or, ``vertical``, one above another (40x1448), upright."""
    pad = ((4, 4), (6, 6)) if vertical else ((6, 6), (4, 4))
    cells = np.concatenate([np.pad(d, pad) for d in digits], 0 if vertical else 1)
    return np.pad(cells, ((4, 4), (0, 0)) if vertical else ((0, 0), (4, 4)))


def as_file(pixels: np.ndarray, kind: str, dark: bool = True) -> io.BytesIO:
    """The picture as a PNG or JPEG file in memory, black ink on white when ``dark``, as it is (white on black)
    otherwise."""
    buffer = io.BytesIO()
    Image.fromarray(255 - pixels if dark else pixels).save(buffer, kind, **({"quality": 95} if kind == "JPEG" else {}))
    buffer.seek(0)
    return buffer


def similarity(digit: np.ndarray, crop: torch.Tensor) -> float:
    """Cosine similarity of a 28x28 test digit and a crop, the best over shifts of a pixel (centring rounds)."""
    original, crop = torch.from_numpy(digit).float(), crop.reshape(28, 28).float()
    return max(
        float((original.roll((dy, dx), (0, 1)) * crop).sum() / (original.norm() * crop.norm()))
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def number_in_long_strip(digits: np.ndarray, scale: int = 1) -> np.ndarray:
    """``digits`` side by side in the middle of a strip 2000 px long and 40 tall (times ``scale``, bicubic)."""
    pixels = np.zeros((40, 2000), np.uint8)
    row = strip(digits)[:, 4:-4]
    pixels[:, 900 : 900 + row.shape[1]] = row
    if scale == 1:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((2000 * scale, 40 * scale), Image.Resampling.BICUBIC))


@pytest.mark.parametrize(("start", "vertical", "dark"), STRIP_KINDS)
def test_strip_of_40_digits_is_refused_not_read_as_one_digit(test_digits, start, vertical, dark):
    images, _ = test_digits
    pixels = strip(images[start : start + 40], vertical)
    assert pixels.shape == ((1448, 40) if vertical else (40, 1448))
    picture = read_picture(Image.fromarray(255 - pixels if dark else pixels))
    assert len(picture.pixels) == 0 and len(picture.quads) == 0
    if vertical:  # digits one above another: not one number
        assert picture.refusal == "<image>: not a digit: marks on several lines, not one number"
    else:  # every digit is seen: the reader's own "more marks than a number has"
        assert picture.refusal == "<image>: not a digit: 40 separate marks, more than the 10 digits of a number"


def test_two_digits_one_above_the_other_are_refused(test_digits):
    """Pairs of test digits in a 40x80 picture, one above the other, were read as one digit (133 of 200 pairs
    answered with success before): the pieces of one digit are not two whole digits stacked."""
    images, _ = test_digits
    read = [
        s for s in range(0, 1000, 10) if len(read_picture(Image.fromarray(255 - strip(images[s : s + 2], True))).pixels)
    ]
    assert read == []


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_number_in_a_long_strip_is_read_digit_by_digit(test_digits, kind):
    """Six test digits in the middle of a 2000x40 strip (and of a 4000x80 JPEG, which the decoder reduces by half):
    six crops, left to right, each like the digit drawn."""
    images, _ = test_digits
    for start in (0, 100, 140):
        digits = images[start : start + 6]
        for dark in (True, False):
            pixels = number_in_long_strip(digits, 2 if kind == "JPEG" else 1)
            picture = read_picture(as_file(pixels, kind, dark))
            assert picture.refusal == "" and picture.pixels.shape == (6, 1, 28, 28), (start, dark, picture.refusal)
            assert min(similarity(d, c) for d, c in zip(digits, picture.pixels, strict=True)) > 0.75
            assert np.all(np.diff(picture.boxes[:, 0]) > 0)  # left to right
    gray, size = load_gray(as_file(number_in_long_strip(images[:6], 2), "JPEG"), 64_000_000, WORK_SIDE)
    assert size == (4000, 80) and gray.shape == (40, 2000)  # reduced by 1/2 in the decoder: its shorter side kept


def test_analysis_size_keeps_photos_and_bounds_strips():
    assert work_shape(640, 480) == (320, 240) and work_shape(480, 640) == (240, 320)  # photos: as before
    assert work_shape(4032, 3024) == (320, 240) and work_shape(28, 28) == (192, 192)
    assert work_shape(1448, 40) == (1448, 40) and work_shape(40, 1448) == (40, 1448)  # a strip keeps its digits' size
    for size in [(12000, 40), (40, 12000), (64_000_000, 1), (1, 5000), (3000, 300)]:
        width, height = work_shape(*size)
        assert width * height <= WORK_PIXELS + max(width, height), size  # a row of rounding at most


@pytest.mark.parametrize("vertical", [False, True])
def test_hostile_long_strips_are_refused_within_bounded_work(test_digits, vertical):
    """A 11996x40 strip of 333 test digits is analysed at 11084x37 px (at most WORK_PIXELS and a row) and refused
    for its marks; one 60,488 px long cannot keep MIN_STRIP_SIDE px across and is refused for its shape."""
    images, _ = test_digits
    for count, kind in ((333, "PNG"), (333, "JPEG"), (1680, "PNG")):
        pixels = strip(images[:count], vertical)
        source = as_file(pixels, kind)
        gray, size = load_gray(source, 64_000_000, WORK_SIDE)
        ink, work = ink_map_of_gray(gray, size)
        assert gray.size <= WORK_PIXELS + max(gray.shape) and work.shape == gray.shape
        assert ink.darkness.size <= WORK_PIXELS + max(gray.shape)
        source.seek(0)
        picture = read_picture(source)
        assert len(picture.pixels) == 0, picture.refusal
        if count == 333:
            assert picture.refusal == "<image>: not a digit: 333 separate marks, a texture or noise rather than writing"
            assert min(work.shape) >= MIN_STRIP_SIDE
        else:
            long_side = max(pixels.shape)
            expected = (40, long_side) if vertical else (long_side, 40)
            assert re.fullmatch(
                rf"<image>: not read: the picture is {expected[0]}x{expected[1]} px, 1512 times as long as it is "
                rf"wide, so its digits would be under {MIN_STRIP_SIDE} px tall at the reader's size \(\d+x\d+ px, "
                r"at most 409,600 pixels\); crop it to the digits, a number at a time",
                picture.refusal,
            ), picture.refusal


@pytest.fixture(scope="module")
def probs_fn(trained_run):
    model, _ = load_model(trained_run["best_ckpt"])
    return model.probabilities


@pytest.mark.usefixtures("one_torch_thread")
def test_strips_never_get_a_wrong_number_with_success(probs_fn, test_digits):
    """classify (what predict and serve answer with): the 40-digit strips are refused, the numbers in long strips
    read right or refused, never another number."""
    images, labels = test_digits
    for start, vertical, dark in STRIP_KINDS:
        pixels = strip(images[start : start + 40], vertical)
        reading = classify(read_picture(Image.fromarray(255 - pixels if dark else pixels)), probs_fn)
        assert reading.digits == "" and reading.error, (start, vertical, dark, reading.digits)
    for start in range(0, 200, 20):
        truth = "".join(str(int(y)) for y in labels[start : start + 6])
        reading = classify(read_picture(as_file(number_in_long_strip(images[start : start + 6]), "PNG")), probs_fn)
        assert reading.digits in ("", truth), (start, truth, reading.digits, reading.confidences)


def cropped_to_ink(digits: np.ndarray, pad: int) -> np.ndarray:
    """``digits`` side by side in 36x28 cells (4 px apart), the whole then cropped to its ink's rows plus ``pad``
    px above and below: how a user crops a number tightly."""
    row = np.concatenate([np.pad(d, ((0, 0), (4, 4))) for d in digits], 1)
    ink_rows = np.flatnonzero(row.max(1) > 0)
    top, bottom = ink_rows[0], ink_rows[-1] + 1
    return np.pad(row[top:bottom], ((pad, pad), (8, 8)))


@pytest.mark.parametrize("digits", [[1, 0, 4], [36, 37, 38, 39], [0, 1, 2, 3, 4, 5]])
@pytest.mark.parametrize("dark", [True, False])
def test_a_digit_touching_the_edge_refuses_the_picture_not_the_digit(test_digits, digits, dark):
    """A number cropped to its ink: the digits that reach the top or bottom edge were left out as objects the frame
    cut, and the rest was read with success (721041 as 4 at 99.75%). Refused now, unless every digit touches it (then
    all are read); with a margin, every digit is read."""
    images, _ = test_digits
    tight = read_picture(as_file(cropped_to_ink(images[digits], 0), "PNG", dark))
    if digits == [36, 37, 38, 39]:  # every digit touches the edge: none is taken for an object the frame cut
        assert tight.refusal == "" and len(tight.pixels) == len(digits)
    else:
        assert len(tight.pixels) == 0 and "touches the picture's edge; leave a margin" in tight.refusal
    spaced = read_picture(as_file(cropped_to_ink(images[digits], 6), "PNG", dark))
    assert spaced.refusal == "" and len(spaced.pixels) == len(digits)
    for crop, k in zip(spaced.pixels, digits, strict=True):
        assert similarity(images[k], crop) > 0.75


def test_a_strip_is_not_cut_to_a_sheet_found_in_part_of_it(test_digits):
    """20 digits of 40 px, 1024 px apart in 20479x40 px: a "sheet" was found around some of them, the digits beyond it left
    out, and 10 read with success. A picture over 3 times as long as wide has no sheet looked for: its 20 marks
    are seen (and refused as more than a number's 10 digits, or as touching the edge)."""
    images, _ = test_digits
    pixels = np.zeros((40, 20479), np.uint8)
    for k in range(20):
        pixels[:, 1024 * k + 492 : 1024 * k + 532] = Image.fromarray(images[k]).resize(
            (40, 40), Image.Resampling.BILINEAR
        )
    found = read_picture(as_file(pixels, "PNG"))
    assert len(found.pixels) == 0
    assert (
        "20 separate marks, more than the 10 digits" in found.refusal or "touches the picture's edge" in found.refusal
    )
