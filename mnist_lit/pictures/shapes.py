"""Shape tests of one mark (a bool mask in its box): stroke thickness, scattered specks, and cutting touching
digits apart; and of one MNIST-style crop: strokes crossed, stroke-width constancy, the shape of its loops. The few
hand-written measures :mod:`mnist_lit.pictures.segment` and :mod:`mnist_lit.pictures.read` decide with (OpenCV
finds the contours, components and distances)."""

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


#: A component of a mark with the mark's other components on all four sides of it (left and right within its rows,
#: above and below within its columns), and at least ENCLOSED_HEIGHT of their height, is enclosed by them: a digit in
#: a box or a circle, drawn closed or not, eyes in a face. The pieces of a handwritten digit lie next to, above or
#: across each other, never all around one another; dirt inside a loop is smaller.
ENCLOSED_HEIGHT = 0.25


def enclosed(labels: np.ndarray, group: list[int]) -> bool:
    """Whether a component of ``group`` has the others on all four sides (:data:`ENCLOSED_HEIGHT`).

    Args:
        labels: int (h, w), OpenCV's component labels over the box of the mark.
        group: the labels of the mark's components.
    """
    in_group = np.isin(labels, group)
    for j in group:
        inner = labels == j
        others = in_group & ~inner
        rows, cols, other_rows = (np.flatnonzero(a) for a in (inner.any(1), inner.any(0), others.any(1)))
        if not rows.size or not other_rows.size:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        if r1 - r0 < ENCLOSED_HEIGHT * (other_rows[-1] + 1 - other_rows[0]):
            continue
        beside, over = others[r0:r1], others[:, c0:c1]
        if beside[:, :c0].any() and beside[:, c1:].any() and over[:r0].any() and over[r1:].any():
            return True
    return False


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


def off_row(boxes: np.ndarray, tolerance: float, max_slope: float) -> bool:
    """True when the centres of ``boxes`` (int (K, 4) of ``x0, y0, x1, y1``, K >= 2) are not one row of writing: the
    least-squares line through them is steeper than ``max_slope`` (dy/dx) or vertical, or a centre lies more than
    ``tolerance`` px from it. A line, not a level: a photo taken at an angle tilts the whole row."""
    x, y = _centres(boxes)
    if np.ptp(x) == 0:
        return True
    slope, intercept = np.polyfit(x, y, 1)
    return bool(abs(slope) > max_slope or np.abs(y - (slope * x + intercept)).max() > tolerance)


def row_slope(boxes: np.ndarray) -> float:
    """dy/dx of the least-squares line through the centres of ``boxes`` (int (K, 4) ``x0, y0, x1, y1``, the marks of
    one row, K >= 2 at distinct x); y grows downwards, so a row falling to the right has a positive slope."""
    return float(np.polyfit(*_centres(boxes), 1)[0])


def _centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x and y centres, float64 (K,) each, of ``boxes`` (int (K, 4) ``x0, y0, x1, y1``)."""
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


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


def nested(boxes: list[Box]) -> bool:
    """Whether one of ``boxes`` (x0, y0, x1, y1 each: the pieces of one mark) lies wholly inside another, none of its
    sides on the other's (eyes in a face, a window in a house): the pieces of a handwritten digit sit next to or above
    each other, never inside."""
    return any(a[0] < b[0] and a[1] < b[1] and b[2] < a[2] and b[3] < a[3] for a in boxes for b in boxes)


#: A mark in several pieces is digits written one above another (a column of digits, a tall strip), not one digit
#: in pieces, when it is more than STACK_ASPECT times as tall as it is wide and more than STACK_HEIGHT times as tall as
#: one of its pieces that has a whole digit's shape: no thin stroke (at least STACK_WIDE of its own height wide) and no
#: speck (at least STACK_WIDE of the mark's width tall). One digit's pieces (a 5's loose bar, an 8's two loops) make a
#: mark under about twice as tall as it is wide; a 1 in pieces is taller, but its pieces are thin strokes; 2.1 piece
#: heights is also the most the pieces of one digit span in :mod:`mnist_lit.pictures.segment`. What it refuses on
#: mnist-10k, and what it catches: docs/pictures.md.
STACK_ASPECT, STACK_HEIGHT, STACK_WIDE = 2.0, 2.1, 0.5


def stacked(boxes: list[Box]) -> bool:
    """Whether the pieces of one mark, their ``boxes`` (x0, y0, x1, y1 each), are digits one above another
    (:data:`STACK_ASPECT`, :data:`STACK_HEIGHT`, :data:`STACK_WIDE`); never for one piece."""
    width = max(b[2] for b in boxes) - min(b[0] for b in boxes)
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    return height > STACK_ASPECT * width and any(
        b[2] - b[0] >= STACK_WIDE * (b[3] - b[1])
        and b[3] - b[1] >= STACK_WIDE * width
        and height > STACK_HEIGHT * (b[3] - b[1])
        for b in boxes
    )


def in_a_gap(box: Box, row: list[Box]) -> bool:
    """Whether ``box`` lies wholly in the horizontal gap between two neighbouring boxes of ``row`` (the digits of a
    number), with its centre within the row's height: a decimal point, a colon, a dot of dirt between digits."""
    ordered = sorted(row)
    top, bottom = min(b[1] for b in row), max(b[3] for b in row)
    return top <= (box[1] + box[3]) / 2 <= bottom and any(
        left[2] <= box[0] and box[2] <= right[0] for left, right in itertools.pairwise(ordered)
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


#: A 28x28 crop pixel brighter than this (0-255) is ink for the stroke-width and loop tests.
SHAPE_LEVEL = 100
#: A pen keeps its width along a stroke (the Stroke Width Transform's premise, Epshtein et al., CVPR 2010); a
#: filled triangle (a tree), a blob or a shadow's bar swells and thins. Widths are twice the distance to the
#: background on the ridge of the distance transform (pixels at least as far from the background as their 8
#: neighbours). A crop is refused when their coefficient of variation exceeds MAX_WIDTH_SPREAD or their 90th
#: percentile exceeds MAX_WIDE_RATIO times their median. Calibrated on the 3,000 validation digits of
#: configs/mnist.yaml on mnist-10k (99.9th percentiles: 0.45 and 2.24); 0.10% of them and 0.13% of the 10,000
#: test digits exceed either. The digits of a number (NUMBER_DIGITS or more marks in a row) are not tested: small
#: and bold, their loops filled by the camera's blur, they swell as much as a tree does at 28x28.
MAX_WIDTH_SPREAD, MAX_WIDE_RATIO = 0.5, 2.5
NUMBER_DIGITS = 3
#: A digit's loops (0, 6, 8, 9, a 4's triangle) are ovals or triangles: a loop of at least MIN_LOOP_AREA pixels
#: whose area is under MIN_LOOP_SOLIDITY of its convex hull's has deep notches (a star, a drawing). The lowest
#: solidity of any loop among the 3,000 validation and the 10,000 test digits (as above) is 0.78.
MIN_LOOP_AREA, MIN_LOOP_SOLIDITY = 4, 0.78


def stroke_widths(pixels: np.ndarray) -> np.ndarray:
    """float32 (n,): the stroke widths of a crop (uint8 (28, 28), ink bright) in pixels, one per ridge pixel of the
    distance transform of its ink (pixels over :data:`SHAPE_LEVEL`): twice the distance to the background."""
    ink = np.pad((pixels > SHAPE_LEVEL).astype(np.uint8), 1)
    distance = cv2.distanceTransform(ink, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ridge = (distance > 0) & (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8)))
    return 2.0 * distance[ridge]


def uneven_strokes(pixels: np.ndarray) -> bool:
    """Whether a crop's (uint8 (28, 28)) :func:`stroke_widths` vary more than a pen's: coefficient of variation over
    :data:`MAX_WIDTH_SPREAD`, or 90th percentile over :data:`MAX_WIDE_RATIO` times the median."""
    widths = np.sort(stroke_widths(pixels))
    if len(widths) < 3:
        return False
    median, high = widths[len(widths) // 2], widths[int(0.9 * (len(widths) - 1))]
    return bool(widths.std() > MAX_WIDTH_SPREAD * widths.mean() or high > MAX_WIDE_RATIO * median)


def notched_loop(pixels: np.ndarray) -> bool:
    """Whether a crop (uint8 (28, 28)) has a loop (a hole in its ink, pixels over :data:`SHAPE_LEVEL`, of at least
    :data:`MIN_LOOP_AREA` pixels) whose area is under :data:`MIN_LOOP_SOLIDITY` of its convex hull's."""
    ink = (pixels > SHAPE_LEVEL).astype(np.uint8)
    contours, hierarchy = cv2.findContours(ink, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return False
    for contour, (_next, _previous, _child, parent) in zip(contours, hierarchy[0], strict=True):
        area = cv2.contourArea(contour)
        if parent >= 0 and MIN_LOOP_AREA <= area < MIN_LOOP_SOLIDITY * cv2.contourArea(cv2.convexHull(contour)):
            return True
    return False


def crop_refusal(pixels: np.ndarray, marks: int = 1) -> str:
    """Why a crop (uint8 (28, 28), ink bright), one of ``marks`` read in its picture, is not a digit, as the end of
    a sentence whose subject is the mark ("has more strokes side by side than a digit"), or "" when its shape
    passes :func:`too_many_strokes`, :func:`uneven_strokes` (not asked of a number's digits, ``marks`` of at least
    :data:`NUMBER_DIGITS`) and :func:`notched_loop`."""
    if too_many_strokes(pixels):  # a spiral, a house, a W
        return "has more strokes side by side than a digit"
    if marks < NUMBER_DIGITS and uneven_strokes(pixels):
        return "swells and thins like a filled shape (a tree, a shadow's edge), where a pen's stroke keeps its width"
    if notched_loop(pixels):
        return "has a loop with deep notches (a star, a drawing), where a digit's loops are ovals"
    return ""
