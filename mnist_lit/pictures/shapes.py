"""Shape tests of one mark (a bool mask in its box): stroke thickness, scattered specks, and cutting touching
digits apart. The few hand-written measures :mod:`mnist_lit.pictures.segment` decides with (OpenCV finds the
contours and components)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np

#: A box ``(x0, y0, x1, y1)`` in the ink map's pixels, x1 and y1 exclusive.
Box = tuple[int, int, int, int]
#: Expected width of one digit, as a fraction of its height, when counting touching digits.
DIGIT_ASPECT = 0.75
#: A mark in this many pieces or more, none holding this share of its ink, is scattered specks, not a digit (the
#: generated photos' digits come in at most 3 pieces with the largest holding over half the ink).
SCATTER_PARTS, SCATTER_SHARE = 5, 0.5
#: A 28x28 crop pixel brighter than one of these levels (0-255) is ink when strokes are counted (the higher one
#: parts strokes that the blur joined) ...
CROSSING_LEVELS = (100, 160)
#: ... and a digit crosses a horizontal line at most MAX_ROW_CROSSINGS times and a vertical one at most
#: MAX_COLUMN_CROSSINGS times (on all but one row / column) at either level. Of the 3,000 validation digits of
#: configs/mnist.yaml on mnist-10k 0.17% cross more (of the 10,000 test digits 0.06%); spirals, houses, stars,
#: hatching and letters such as W and M cross more.
MAX_ROW_CROSSINGS, MAX_COLUMN_CROSSINGS = 3, 4


def ink_box(mask: np.ndarray) -> Box:
    """The box ``(x0, y0, x1, y1)`` (exclusive ends) of the true pixels of a bool (h, w) mask."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def split_touching(mask: np.ndarray, x0: int, y0: int) -> list[tuple[np.ndarray, Box]]:
    """A box mask holding several touching digits, cut at the columns with the least ink near the expected
    digit borders; each piece re-boxed to its own ink. Pieces are (mask, (x0, y0, x1, y1))."""
    height, width = mask.shape
    count = int(np.clip(round(width / (DIGIT_ASPECT * height)), 2, 4))
    profile = mask.sum(0).astype(np.float64)
    cuts = [0]
    for k in range(1, count):
        centre, reach = k * width / count, width / count / 3
        lo, hi = int(centre - reach), int(centre + reach) + 1
        cuts.append(lo + int(np.argmin(profile[lo:hi])))
    cuts.append(width)
    pieces = []
    for left, right in itertools.pairwise(cuts):
        piece = np.zeros_like(mask)
        piece[:, left:right] = mask[:, left:right]
        if piece.any():
            bx0, by0, bx1, by1 = ink_box(piece)
            pieces.append((piece[by0:by1, bx0:bx1], (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)))
    return pieces


def stroke_ratio(mask: np.ndarray) -> float:
    """Mean stroke thickness over height: twice the area over the outline's length (a thin stroke of width w
    and length L has area wL and outline about 2L), divided by the mark's height."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * float(mask.sum()) / max(outline, 1.0) / mask.shape[0]


def scattered(mask: np.ndarray) -> bool:
    """Whether a mark (bool (h, w)) is :data:`SCATTER_PARTS` or more pieces none of which holds
    :data:`SCATTER_SHARE` of its ink: specks of noise or texture, where a digit, even broken, has a main stroke."""
    _count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return len(areas) >= SCATTER_PARTS and areas.max() < SCATTER_SHARE * areas.sum()


def in_row(box: Box, row: list[Box], height_ratio: float = 0.7, tolerance: float = 0.5) -> bool:
    """Whether ``box`` lines up with the boxes of ``row`` as one more digit of the same number: its height within
    ``height_ratio`` .. 1 / ``height_ratio`` of their median height, its vertical centre within ``tolerance``
    of that height from theirs, and it does not overlap any of them horizontally."""
    heights = np.array([b[3] - b[1] for b in row], np.float64)
    centres = np.array([(b[1] + b[3]) / 2 for b in row], np.float64)
    height, centre = float(np.median(heights)), float(np.median(centres))
    own = box[3] - box[1]
    return (
        height_ratio * height <= own <= height / height_ratio
        and abs((box[1] + box[3]) / 2 - centre) <= tolerance * height
        and all(min(box[2], b[2]) <= max(box[0], b[0]) for b in row)
    )


def crossings(pixels: np.ndarray, level: int) -> tuple[int, int]:
    """How many separate strokes a horizontal and a vertical line cross in an MNIST-style crop (uint8 (28, 28),
    ink bright): the runs of pixels brighter than ``level`` along each row and each column, the second-highest
    count over rows and over columns (one stray row or column does not count)."""
    ink = np.pad((pixels > level).astype(np.int8), 1)
    rows = np.sort((np.diff(ink, axis=1) == 1).sum(1))
    columns = np.sort((np.diff(ink, axis=0) == 1).sum(0))
    return int(rows[-2]), int(columns[-2])


def too_many_strokes(pixels: np.ndarray) -> bool:
    """Whether a crop (uint8 (28, 28)) crosses more strokes than a digit does (:func:`crossings` over
    :data:`MAX_ROW_CROSSINGS` or :data:`MAX_COLUMN_CROSSINGS` at one of the :data:`CROSSING_LEVELS`)."""
    for level in CROSSING_LEVELS:
        rows, columns = crossings(pixels, level)
        if rows > MAX_ROW_CROSSINGS or columns > MAX_COLUMN_CROSSINGS:
            return True
    return False
