"""Ruled and squared paper: find the long, thin, straight printed lines in an ink mask and remove them, keeping
the strokes that cross them. OpenCV's probabilistic Hough transform finds the segments; the thinness test and the
bridging are the few hand-written lines (no library call tells a printed line from a digit's long bar)."""

from __future__ import annotations

import cv2
import numpy as np

#: Printed lines are at least this fraction of the sheet's width (or height) long: ruled and squared paper
#: runs across the whole sheet, a digit's strokes are shorter unless the digit fills the picture ...
RULE_LENGTH = 0.4
#: ... within this many degrees of the picture's axes ...
RULE_TILT = 8
#: ... and thin: the ink within RULE_BAND px of the line is at most RULE_WIDE_RATIO times the ink within
#: RULE_NARROW px (the line's own band, cleared where no stroke crosses it).
RULE_BAND, RULE_NARROW = 4, 2
RULE_WIDE_RATIO = 2.0
#: Ink at least this many pixels thick across a line (a pen stroke running along it) is not the line's.
RULE_KEEP = 4
#: A stroke's gap across a removed line is bridged up to this many pixels (the line's band, 2 RULE_NARROW + 1 px).
RULE_BRIDGE = 2 * RULE_NARROW + 1


def _rule_segments(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Long straight segments (x1, y1, x2, y2) within :data:`RULE_TILT` degrees of the picture's axes, found by
    OpenCV's probabilistic Hough transform in ``mask``: at least :data:`RULE_LENGTH` of the side they run along."""
    height, width = mask.shape
    shortest = int(RULE_LENGTH * min(height, width))
    # searched at half size (a 2x2 cell with any ink is ink): a quarter of the points, the same long lines
    half = (max(1, width // 2), max(1, height // 2))
    small = (cv2.resize(mask * 255, half, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    length, gap = shortest // 2, max(2, shortest // 40)
    if not _may_hold_segment(small, length, gap):
        return []
    found = cv2.HoughLinesP(
        small * 255,
        1,
        np.pi / 180,  # 1-degree steps: a segment's ends are ink pixels, its band is measured below
        threshold=max(5, shortest // 4),
        minLineLength=length,
        maxLineGap=gap,
    )
    found = 2 * found + 1 if found is not None else None
    segments = []
    for x1, y1, x2, y2 in found.reshape(-1, 4) if found is not None else []:
        angle = abs(np.degrees(np.arctan2(y2 - y1, x2 - x1))) % 90
        along = width if abs(x2 - x1) >= abs(y2 - y1) else height
        if min(angle, 90 - angle) <= RULE_TILT and np.hypot(x2 - x1, y2 - y1) >= RULE_LENGTH * along:
            segments.append((int(x1), int(y1), int(x2), int(y2)))
    return segments


def _may_hold_segment(mask: np.ndarray, length: int, gap: int) -> bool:
    """False when OpenCV's ``HoughLinesP(mask, ..., minLineLength=length, maxLineGap=gap)`` cannot return a segment.

    It walks a candidate line one pixel at a time along its longer axis, keeps the ink pixels it meets and stops
    after more than ``gap`` misses in a row; a segment must reach ``length`` px in x or in y between its end pixels.
    So the columns (or the rows) holding ink must then form a run at least ``length`` long whose holes are at most
    ``gap`` wide: without such a run in either projection of ``mask`` there is nothing to search for.
    """
    return any(_longest_run(np.asarray(mask.any(axis)), gap) >= length for axis in (0, 1))


def _longest_run(present: np.ndarray, gap: int) -> int:
    """The longest extent (last index - first) of the true entries of a 1-D bool array, holes of at most ``gap``
    false entries bridged; 0 when none is true."""
    where = np.flatnonzero(present)
    if not len(where):
        return 0
    breaks = np.flatnonzero(np.diff(where) > gap + 1)
    starts = np.concatenate([where[:1], where[breaks + 1]])
    ends = np.concatenate([where[breaks], where[-1:]])
    return int((ends - starts).max())


def remove_rules(mask: np.ndarray, darkness: np.ndarray) -> None:
    """Remove long, thin, straight lines near the picture's axes (ruled and squared paper, also a few degrees
    off after straightening) from ``mask`` (uint8 0/1) and ``darkness`` in place, then bridge the gaps they
    leave in strokes that crossed them.

    A segment from :func:`_rule_segments` is a printed line when the ink within :data:`RULE_NARROW` px of it holds most of the
    ink within :data:`RULE_BAND` px (a digit's own long bar, in a digit filling the picture, is thicker). Its
    pixels are cleared, except ink at least :data:`RULE_KEEP` px thick across it (a stroke running along the
    line), and a stroke crossing it gets them back where ink lies on both sides of it.
    """
    across = {True: np.zeros_like(mask), False: np.zeros_like(mask)}  # bands of horizontal / vertical lines
    for x1, y1, x2, y2 in _rule_segments(mask):
        narrow, wide = np.zeros_like(mask), np.zeros_like(mask)
        cv2.line(narrow, (x1, y1), (x2, y2), 1, 2 * RULE_NARROW + 1)
        cv2.line(wide, (x1, y1), (x2, y2), 1, 2 * RULE_BAND + 1)
        inner, outer = int((mask & narrow).sum()), int((mask & wide).sum())
        if inner and outer <= RULE_WIDE_RATIO * inner:
            across[abs(x2 - x1) >= abs(y2 - y1)] |= narrow
    if not (across[True].any() or across[False].any()):  # no printed line: nothing to remove or bridge
        return
    lines = np.zeros_like(mask)
    for horizontal, band in across.items():  # a stroke running along a line is thicker than it: kept
        if not band.any():
            continue
        shape = (1, RULE_KEEP) if horizontal else (RULE_KEEP, 1)
        other = mask & (1 - across[not horizontal])
        thick = cv2.morphologyEx(other, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, shape))
        lines |= band & (1 - thick)
    lines &= cv2.dilate(mask, np.ones((3, 3), np.uint8))
    mask[lines > 0] = 0
    closed = np.zeros_like(mask)
    for shape in ((1, RULE_BRIDGE), (RULE_BRIDGE, 1)):  # across horizontal lines, across vertical lines
        closed |= cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, shape))
    refill = (closed > 0) & (lines > 0)
    level = float(np.median(darkness[mask > 0])) if mask.any() else 0.0
    darkness[lines > 0] = 0.0
    darkness[refill] = level
    mask[refill] = 1
