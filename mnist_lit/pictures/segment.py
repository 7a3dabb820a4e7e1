"""Ink -> the boxes of the digits in it, left to right, or the reason there is no digit.

Connected components of the ink (OpenCV), then the few rules that turn components into digits: broken
strokes stacked in one column are one digit, specks far smaller than the digits are dirt, a component much
wider than tall is several touching digits (cut where the least ink is), and marks of very different
heights, on several lines, or filled like blobs are not digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mnist_lit.pictures.ink import InkMap
from mnist_lit.pictures.mask import InkMask, ink_mask
from mnist_lit.pictures.shapes import (
    Box,
    enclosed,
    in_a_gap,
    in_row,
    nested,
    off_row,
    scattered,
    split_touching,
    stacked,
    stroke_ratio,
)

#: Components under this many pixels, or under this fraction of the largest one's area, are dirt or noise.
MIN_AREA = 2
DIRT_FRACTION = 0.02
#: A mark smaller than this fraction of the tallest mark in both directions is a speck (dot, dirt, a stray
#: pixel of noise) and is left out.
SPECK_FRACTION = 0.4
#: Components whose column ranges overlap by at least this fraction of the narrower one are one digit
#: (a 5 whose bar came loose, a 4 drawn in two strokes).
STACK_OVERLAP = 0.5
#: A digit wider than this many times its height is taken as several touching digits; a short part of such a cut
#: holding under SLIVER_SHARE of the ink is a remnant of a printed line or dirt.
SPLIT_RATIO, SLIVER_SHARE = 1.5, 0.1
#: All marks together no wider than this many times their height are one digit in pieces (two digits side by
#: side are wider: about 0.6-0.8 height each plus a gap; only "11" and the like are narrower).
ONE_DIGIT_ASPECT = 0.9
#: Marks shorter than this fraction of the tallest one ...
FRAGMENT_HEIGHT = 0.6
#: ... join the nearest full-height mark when their boxes are at most this fraction of the tallest height apart.
FRAGMENT_GAP = 0.15
#: More marks than this is text or a pattern, not a number.
MAX_DIGITS = 10
#: All digits of a number are at least MIN_HEIGHT_RATIO of the tallest one's height (digits are written at one height,
#: a word's lower-case letters at about 0.5-0.75 of its capitals; docs/pictures.md), each centre within ROW_TOLERANCE
#: tallest heights of the line through all centres, a line at most MAX_ROW_SLOPE steep (tan 30 deg: a photo taken at an
#: angle tilts the row, by up to 25 deg).
MIN_HEIGHT_RATIO, ROW_TOLERANCE, MAX_ROW_SLOPE = 0.75, 0.5, 0.58
#: Marks that do not line up as one number are still one digit when the tallest holds this many times the ink
#: of all the others together (the rest are dirt, a sliver of table, a shadow's edge).
DOMINANT = 3.0
#: A mark whose strokes are thicker than this fraction of its height is a filled shape, not a pen stroke
#: (MNIST strokes: about 0.1-0.2 of the digit's height).
MAX_STROKE_RATIO = 0.33
#: ... unless it is one digit of a number, lined up with at least two pen-stroke digits, and its strokes are at
#: most this fraction of its height (a small, bold digit whose loops the camera's blur filled).
BOLD_STROKE_RATIO = 0.45
#: Ink covering more than this fraction of the paper is a picture (a scene, a texture), not writing.
MAX_INK_FRACTION = 0.4


@dataclass
class Marks:
    """Digit boxes found in an :class:`InkMap`, left to right.

    Attributes:
        boxes: int (K, 4) ``x0, y0, x1, y1`` (x1, y1 exclusive) in the ink map's pixels.
        masks: K bool arrays, each the digit's ink pixels inside its box, shape (y1 - y0, x1 - x0).
        refusal: "" or why the picture holds no digit (one line, no file name), then K == 0.
        cut: a substantial mark touching the sheet's edge was left out (look again without the sheet).
    """

    boxes: np.ndarray
    masks: list[np.ndarray]
    refusal: str = ""
    cut: bool = False


def _refuse(reason: str, cut: bool = False) -> Marks:
    return Marks(np.zeros((0, 4), np.int64), [], reason, cut)


def _groups(stats: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    """Component ``labels`` grouped into digits: components stacked in one column (their column ranges overlap
    by :data:`STACK_OVERLAP` of the narrower one), and no farther apart vertically than the smaller one's
    height, belong together."""
    order = sorted(labels.tolist(), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    groups: list[list[int]] = []
    boxes: list[list[int]] = []  # x0, y0, x1, y1 of each group
    for i in order:
        x0, y0 = stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP]
        x1, y1 = x0 + stats[i, cv2.CC_STAT_WIDTH], y0 + stats[i, cv2.CC_STAT_HEIGHT]
        for g, (gx0, gy0, gx1, gy1) in enumerate(boxes):
            overlap = min(gx1, x1) - max(gx0, x0)
            gap = max(gy0, y0) - min(gy1, y1)
            if overlap >= STACK_OVERLAP * min(x1 - x0, gx1 - gx0) and gap <= min(y1 - y0, gy1 - gy0):
                groups[g].append(i)
                boxes[g] = [min(gx0, x0), min(gy0, y0), max(gx1, x1), max(gy1, y1)]
                break
        else:
            groups.append([i])
            boxes.append([x0, y0, x1, y1])
    return groups


def _group_box(stats: np.ndarray, group: list[int]) -> Box:
    x0 = min(stats[i, cv2.CC_STAT_LEFT] for i in group)
    y0 = min(stats[i, cv2.CC_STAT_TOP] for i in group)
    x1 = max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in group)
    y1 = max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in group)
    return x0, y0, x1, y1


def _attach_fragments(groups: list[list[int]], boxes: list[Box]) -> tuple[list[list[int]], list[Box]]:
    """Groups shorter than :data:`FRAGMENT_HEIGHT` of the tallest join the nearest full-height group when the
    gap between their boxes is at most :data:`FRAGMENT_GAP` of the tallest height (a piece of a stroke that
    came loose next to its digit); the others stay as they are."""
    tallest = max(b[3] - b[1] for b in boxes)
    full = [k for k, b in enumerate(boxes) if b[3] - b[1] >= FRAGMENT_HEIGHT * tallest]
    merged = {k: list(groups[k]) for k in full}
    out_boxes = {k: boxes[k] for k in full}
    rest = []
    for k, box in enumerate(boxes):
        if k in merged:
            continue

        def gap(j: int, box: tuple = box) -> float:
            other = out_boxes[j]
            dx = max(other[0] - box[2], box[0] - other[2], 0)
            dy = max(other[1] - box[3], box[1] - other[3], 0)
            return float(np.hypot(dx, dy))

        nearest = min(full, key=gap) if full else None
        if nearest is not None and gap(nearest) <= FRAGMENT_GAP * tallest:
            merged[nearest] += groups[k]
            b = out_boxes[nearest]
            out_boxes[nearest] = (min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3]))
        else:
            rest.append(k)
    keys = sorted([*merged, *rest])
    return (
        [merged[k] if k in merged else groups[k] for k in keys],
        [out_boxes[k] if k in out_boxes else boxes[k] for k in keys],
    )


class _NoDigit(Exception):
    """Raised by a step of :func:`find_marks` with the refusal's reason (one line)."""


def find_marks(ink: InkMap) -> Marks:
    """The digits' boxes in ``ink``, left to right, or a refusal saying why there is none."""
    found = ink_mask(ink)
    mask, cut = found.mask, found.cut
    try:
        kept = _components(found, max(1, int(ink.region.sum())))
        pieces = _pieces(found.labels, found.stats, kept)
        marks = _one_number(_split_wide(_pen_strokes(pieces)))
        digits = [box for _, box in marks]
        if len(digits) > 1 and any(in_a_gap(box, digits) for _, box in pieces if box not in digits):
            raise _NoDigit(
                "not a number: a small mark between its digits (a decimal point? a colon?), which is not read"
            )
    except _NoDigit as refusal:  # only "no ink at all" may mean the sheet was cut too small: look again
        return _refuse(str(refusal), cut=cut and not mask.any())
    return Marks(np.array([box for _, box in marks], np.int64), [piece for piece, _ in marks], cut=cut)


def _components(found: InkMask, paper: int) -> np.ndarray:
    """The labels of the connected components of the ink that are not dirt; refuses no ink, a digit at the
    picture's edge (:func:`mnist_lit.pictures.mask.ink_mask`), ink over :data:`MAX_INK_FRACTION` of the ``paper``
    pixels, and a texture of many marks."""
    mask = found.mask
    if not mask.any():
        raise _NoDigit("no digit found (nothing stands out from the paper or background)")
    if found.digit_at_edge:
        raise _NoDigit("not read: a mark the size of the digits touches the picture's edge; leave a margin around them")
    if mask.sum() > MAX_INK_FRACTION * paper:
        raise _NoDigit(
            f"not a digit: dark marks cover {mask.sum() / paper:.0%} of the picture, as in a photo of a scene, not writing"
        )
    present = np.flatnonzero(found.keep)
    areas = found.stats[present, cv2.CC_STAT_AREA]
    kept = present[areas >= max(MIN_AREA, DIRT_FRACTION * areas.max())]
    if len(kept) > 4 * MAX_DIGITS:
        raise _NoDigit(f"not a digit: {len(kept)} separate marks, a texture or noise rather than writing")
    return kept


def _pieces(labels: np.ndarray, stats: np.ndarray, kept: np.ndarray) -> list[tuple[np.ndarray, Box]]:
    """Components grouped into digit candidates: (bool mask in its box, box) each; a broken digit is one."""
    groups = _groups(stats, kept)
    boxes = [_group_box(stats, g) for g in groups]
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    tallest = max(b[3] - b[1] for b in boxes)
    if (
        1 < len(groups) <= 4
        and union[2] - union[0] <= ONE_DIGIT_ASPECT * (union[3] - union[1])
        and union[3] - union[1] <= 2.1 * tallest
    ):
        groups, boxes = [[i for g in groups for i in g]], [union]  # pieces of one digit (a broken stroke)
    else:
        groups, boxes = _attach_fragments(groups, boxes)
    pieces = []
    for group, (x0, y0, x1, y1) in zip(groups, boxes, strict=False):
        parts = [_group_box(stats, [i]) for i in group]
        if len(groups) > 1 and nested(parts):
            raise _NoDigit("not a digit: marks drawn inside other marks, as in a drawing")
        if len(group) > 1 and enclosed(labels[y0:y1, x0:x1], group):
            raise _NoDigit("not a digit: a mark enclosed by others (a digit in a box or a circle?); crop to the digit")
        if stacked(parts):  # a column of digits, joined as one digit's pieces
            raise _NoDigit("not a digit: marks on several lines, not one number")
        pieces.append((np.isin(labels[y0:y1, x0:x1], group), (x0, y0, x1, y1)))
    return pieces


def _pen_strokes(pieces: list[tuple[np.ndarray, Box]]) -> list[tuple[np.ndarray, Box]]:
    """``pieces`` without specks (under :data:`SPECK_FRACTION` of the tallest both ways) and filled shapes;
    refuses when every piece is filled."""
    tallest = max(box[3] - box[1] for _, box in pieces)
    pieces = [
        (m, b) for m, b in pieces if b[3] - b[1] >= SPECK_FRACTION * tallest or b[2] - b[0] >= SPECK_FRACTION * tallest
    ]
    ratios = [stroke_ratio(m) for m, _ in pieces]
    strokes = [p for p, r in zip(pieces, ratios, strict=True) if r <= MAX_STROKE_RATIO]  # not a corner of the table
    if len(strokes) >= 2:  # a bold digit of a number, its loops filled by the blur, still lines up with the others
        rows = [b for _, b in strokes]
        strokes += [
            p
            for p, r in zip(pieces, ratios, strict=True)
            if MAX_STROKE_RATIO < r <= BOLD_STROKE_RATIO and in_row(p[1], rows)
        ]
    if not strokes:
        raise _NoDigit(
            f"not a digit: a filled shape (strokes over {MAX_STROKE_RATIO:.0%} of its height; pen "
            "strokes of digits are thinner)"
        )
    strokes = [(m, b) for m, b in strokes if not scattered(m)]
    if not strokes:
        raise _NoDigit("not a digit: scattered specks, as in noise or a texture (a digit's strokes hang together)")
    return strokes


def _split_wide(pieces: list[tuple[np.ndarray, Box]]) -> list[tuple[np.ndarray, Box]]:
    """Pieces wider than :data:`SPLIT_RATIO` times their height cut into touching digits, sorted left to right;
    a cut leaving a part under :data:`FRAGMENT_HEIGHT` of the piece's height is not made (touching digits are
    each full height: that is one digit with a long bar, a 5's flag or a 7's top), unless that part holds under
    :data:`SLIVER_SHARE` of the ink (a remnant of a printed line, dropped); refuses joined-up writing (more than
    two parts) and more than :data:`MAX_DIGITS` marks."""
    marks = []
    for piece, box in pieces:
        if box[2] - box[0] > SPLIT_RATIO * (box[3] - box[1]):
            parts = split_touching(piece, box[0], box[1])
            if len(parts) > 2:
                raise _NoDigit("not a digit: joined-up writing, as in words (the digits of a number stand apart)")
            short = [b[3] - b[1] < FRAGMENT_HEIGHT * (box[3] - box[1]) for _, b in parts]
            slivers = [s and p.sum() < SLIVER_SHARE * piece.sum() for (p, _), s in zip(parts, short, strict=True)]
            if any(short) and not all(s for s, k in zip(slivers, short, strict=True) if k):
                marks.append((piece, box))
            else:
                marks += [part for part, sliver in zip(parts, slivers, strict=True) if not sliver]
        else:
            marks.append((piece, box))
    if len(marks) > MAX_DIGITS:
        raise _NoDigit(f"not a digit: {len(marks)} separate marks, more than the {MAX_DIGITS} digits of a number")
    return sorted(marks, key=lambda item: (item[1][0] + item[1][2]) / 2)


def _one_number(marks: list[tuple[np.ndarray, Box]]) -> list[tuple[np.ndarray, Box]]:
    """``marks`` when they line up as one number (similar heights, one row); else the one dominant digit (the
    rest is dirt or table), or a refusal (words, several lines)."""
    boxes = np.array([box for _, box in marks], np.int64)
    heights = boxes[:, 3] - boxes[:, 1]
    uneven = heights.min() < MIN_HEIGHT_RATIO * heights.max()
    if len(marks) == 1 or not (uneven or off_row(boxes, ROW_TOLERANCE * heights.max(), MAX_ROW_SLOPE)):
        return marks
    areas = np.array([int(piece.sum()) for piece, _ in marks])
    main = int(np.argmax(heights))
    if areas[main] < DOMINANT * (areas.sum() - areas[main]):
        if uneven:
            raise _NoDigit("not a digit: marks of very different sizes, as in words, not a number")
        raise _NoDigit("not a digit: marks on several lines, not one number")
    return marks[main : main + 1]  # one digit and some dirt or table
