"""The analysis size: how many pixels a picture is looked at with (:mod:`mnist_lit.pictures.ink`), how far its
decoder may reduce it first (:func:`mnist_lit.pictures.decode.load_gray`), and when a picture is too long and thin
to be looked at.

A photo is analysed with its longest side at :data:`WORK_SIDE` px. A long, thin picture (a strip of digits, a
panorama) would lose its shorter side that way: a 1448x40 strip of 40 MNIST digits came out 320x9 px, its digits
6 px tall, and was read as one "2". So a picture whose shorter side would end under :data:`STRIP_SIDE` px keeps
that many (its longer side then longer than :data:`WORK_SIDE`), within :data:`WORK_PIXELS` pixels in all; one
whose shorter side still ends under :data:`MIN_STRIP_SIDE` px is refused (:func:`thin_refusal`). Time and memory
stay bounded by :data:`WORK_PIXELS` whatever the picture's shape.
"""

from __future__ import annotations

import math

#: Pictures are analysed with their longest side at most this many pixels (area-averaged down; a JPEG is reduced
#: in its decoder first, so a 640x480 photo decoded at half size is used as it is): a digit filling a tenth of a
#: phone photo keeps about 32 px, above MNIST's 20 px box. The pixel constants of the pictures modules (line band,
#: bridge, rim, edge band, minimum area) are set for this size (they were 1.6 times as long, the area 2.56 times
#: as large, at the earlier 512 px).
WORK_SIDE = 320
#: Smaller pictures (e.g. a 28x28 MNIST digit) are enlarged (bicubic) to at least this long side, so that
#: their strokes span several pixels, as in a photo.
MIN_SIDE = 192
#: ... except that the shorter side is kept at (or enlarged to) at least this many pixels: a strip of digits
#: filling its height then has digits of about 30 px, the upper end of a number's digits in a photo at
#: :data:`WORK_SIDE` (20-40 px, :data:`mnist_lit.pictures.read.CROP_ENLARGE`); the longer side grows with it.
STRIP_SIDE = 40
#: ... within this many pixels in all (4 x WORK_SIDE squared: a 1448x40 strip of 40 digits is read at its own size,
#: a 12000x40 one at 92%); a 640x480 photo is analysed at 76,800 pixels, so a strip costs at most about 5 times a
#: photo's time and memory.
WORK_PIXELS = 4 * WORK_SIDE * WORK_SIDE
#: A picture whose shorter side is still under this many pixels at analysis size (longer than about 1000 times its
#: width: 409,600 / 20 squared) is refused: MNIST's digits are 20 px tall in their 28 px frame, and digits shorter
#: than that at analysis size lose the strokes the reader's rules and the network need.
MIN_STRIP_SIDE = 20
#: The longer side at analysis size is at most this many pixels (where the shorter side, at :data:`WORK_PIXELS` in
#: all, is down to :data:`MIN_STRIP_SIDE`: such a picture is refused anyway), so that rounding a shorter side of a
#: pixel or two up cannot make the area much larger than :data:`WORK_PIXELS`.
MAX_STRIP_LENGTH = WORK_PIXELS // MIN_STRIP_SIDE


def work_factor(width: int, height: int, side: int = WORK_SIDE) -> float:
    """The scale factor (float, > 0) a picture of ``width`` x ``height`` px (both > 0) is analysed at.

    Its longest side is brought to ``side`` px when longer (default :data:`WORK_SIDE`; the decoder is asked
    for a larger ``side``), to :data:`MIN_SIDE` when shorter than that, else left as it is; then, when its shorter
    side would end under :data:`STRIP_SIDE` px (a strip), to the factor that makes the shorter side
    :data:`STRIP_SIDE` px, the area :data:`WORK_PIXELS` or the longer side :data:`MAX_STRIP_LENGTH`, whichever is
    smallest (never below the first factor). A strip whose shorter side that changes by under half a pixel is not
    resampled (1.0): the decoder has already reduced it to this size, rounding each side. So the analysis size holds
    at most :data:`WORK_PIXELS` pixels, plus a row or column of rounding.
    """
    longest, shortest = max(width, height), min(width, height)
    factor = side / longest if longest > side else MIN_SIDE / longest if longest < MIN_SIDE else 1.0
    if shortest * factor >= STRIP_SIDE:
        return factor
    strip = min(STRIP_SIDE / shortest, math.sqrt(WORK_PIXELS / (width * height)), MAX_STRIP_LENGTH / longest)
    factor = max(factor, strip)
    return 1.0 if round(shortest * factor) == shortest else factor


def work_shape(width: int, height: int, side: int = WORK_SIDE) -> tuple[int, int]:
    """(width, height), px, of a picture of ``width`` x ``height`` px scaled by :func:`work_factor` (each side
    rounded, at least 1)."""
    factor = work_factor(width, height, side)
    return max(1, round(width * factor)), max(1, round(height * factor))


def thin_refusal(width: int, height: int) -> str:
    """ "" or the one-line reason a picture of ``width`` x ``height`` px (upright, as the user sees it) is not read:
    at analysis size (:func:`work_shape`) its shorter side is under :data:`MIN_STRIP_SIDE` px, too few for a digit."""
    work = work_shape(width, height)
    if min(work) >= MIN_STRIP_SIDE:
        return ""
    return (
        f"not read: the picture is {width}x{height} px, {max(width, height) / min(width, height):.0f} times as long "
        f"as it is wide, so its digits would be under {MIN_STRIP_SIDE} px tall at the reader's size "
        f"({work[0]}x{work[1]} px, at most {WORK_PIXELS:,} pixels); crop it to the digits, a number at a time"
    )
