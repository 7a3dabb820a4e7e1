"""Darkness -> the ink mask: hysteresis thresholds set by the paper's noise, printed lines removed
(:mod:`mnist_lit.pictures.rules`), and marks touching the sheet's or picture's edge left out."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from mnist_lit.pictures.ink import InkMap
from mnist_lit.pictures.rules import remove_rules

#: Ink is darkness above ``max(LOW_DARKNESS, NOISE_SIGMAS_LOW * noise)`` (see :class:`InkMap`) ...
LOW_DARKNESS = 0.12
NOISE_SIGMAS_LOW = 5.0
#: ... in components that reach ``max(HIGH_DARKNESS, NOISE_SIGMAS_HIGH * noise)`` somewhere (hysteresis:
#: faint pencil edges stay attached to their stroke, paper grain and JPEG ringing do not start a mark).
HIGH_DARKNESS = 0.18
NOISE_SIGMAS_HIGH = 8.0
#: Upper limits of the two thresholds (light pencil is about 0.2-0.4, ballpoint and felt pen 0.6-0.9).
MAX_LOW_DARKNESS, MAX_HIGH_DARKNESS = 0.2, 0.35
#: A mark touching the sheet's edge at least this fraction of the sheet's shorter side tall, with most of its
#: ink inside, suggests the sheet was found too small (a shadow edge taken for the paper's edge).
CUT_HEIGHT = 0.1
#: ... "well inside" the paper: at least this many pixels from its edge.
CUT_INSIDE = 4
#: On a picture without a sheet, a mark touching its edge between these fractions of the height of the tallest
#: mark inside, and level with those marks, is a digit written or cropped up to the edge, not an object the frame
#: cut: left out, it made the number a digit short (7121 read as 121 with success), so the picture is refused. The
#: lower end is the "very different sizes" rule's (:mod:`mnist_lit.pictures.segment`: digits are written at one
#: height); above the upper end it is a pen, a table's edge or a shadow, left out as before.
EDGE_DIGIT_HEIGHTS = (0.75, 1.5)


def thresholds(noise: float) -> tuple[float, float]:
    """(low, high) darkness thresholds of ink for a picture whose paper has this noise sigma; capped, so a
    textured table that raised the estimate cannot hide dark pen strokes (darkness about 0.8)."""
    low = min(max(LOW_DARKNESS, NOISE_SIGMAS_LOW * noise), MAX_LOW_DARKNESS)
    return low, min(max(HIGH_DARKNESS, NOISE_SIGMAS_HIGH * noise), MAX_HIGH_DARKNESS)


class InkMask(NamedTuple):
    """:func:`ink_mask`'s answer.

    Attributes:
        mask: uint8 (H, W) 0/1, the ink pixels.
        cut: whether a substantial mark was left out because it touches the sheet's edge.
        digit_at_edge: whether a mark left out because it touches the picture's edge looks like one of the digits
            (:data:`EDGE_DIGIT_HEIGHTS`; never on a sheet).
        labels, stats: OpenCV's connected components (8-connected) of the ink before marks were left out;
            ``mask`` is exactly the components whose ``keep`` is True, so they need not be found again.
        keep: bool (count,), the components in ``mask`` (index 0, the background, is False).
    """

    mask: np.ndarray
    cut: bool
    labels: np.ndarray
    stats: np.ndarray
    keep: np.ndarray
    digit_at_edge: bool = False


def ink_mask(ink: InkMap) -> InkMask:
    """The ink pixels (hysteresis on darkness), ruled and squared lines removed; and whether a substantial mark
    was left out because it touches the sheet's edge (the sheet may have been cut too small: a mark of at least
    :data:`CUT_HEIGHT` of the sheet's shorter side with most of its ink away from the edge)."""
    low, high = thresholds(ink.noise)
    mask = ((ink.darkness > low) & ink.region).astype(np.uint8)
    remove_rules(mask, ink.darkness)
    # Grana's block-based algorithm (BBDT): the labels and statistics of OpenCV's default (Spaghetti, which scans the
    # same 2x2 blocks in the same order), with less work per pixel when statistics are gathered.
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
    keep = np.bincount(labels[ink.darkness > high], minlength=count) > 0  # components reaching ``high``
    keep[0] = False
    # Marks touching the edge of the paper (or of the picture) are slivers of table, the sheet's own edge or
    # objects cut by the frame; they are left out (on a picture without a sheet, unless nothing else is there:
    # a drawing may touch its canvas's edge).
    edge = np.ones(mask.shape, np.uint8)
    edge[1:-1, 1:-1] = 0
    edge |= cv2.dilate((~ink.region).astype(np.uint8), np.ones((3, 3), np.uint8))
    touching = np.bincount(labels[edge > 0], minlength=count) > 0
    cut = ink.sheet_found and _cut_by_edge(ink.region, labels, stats, np.flatnonzero(keep & touching))
    at_edge = not ink.sheet_found and _digit_at_edge(stats, keep, touching)
    if ink.sheet_found or (keep & ~touching).any():
        keep &= ~touching
    kept = mask if keep[1:].all() else keep.astype(np.uint8)[labels]  # every component kept: the mask as it is
    return InkMask(kept, cut, labels, stats, keep, at_edge)


def _digit_at_edge(stats: np.ndarray, keep: np.ndarray, touching: np.ndarray) -> bool:
    """Whether one of the components in ``keep`` that are ``touching`` the edge (bool (count,) each; OpenCV's
    ``stats``) is a digit's size, :data:`EDGE_DIGIT_HEIGHTS` of the tallest of those inside, with its middle between
    their top and their bottom."""
    inside, at_edge = np.flatnonzero(keep & ~touching), np.flatnonzero(keep & touching)
    if not len(inside) or not len(at_edge):
        return False
    tops, heights = stats[inside, cv2.CC_STAT_TOP], stats[inside, cv2.CC_STAT_HEIGHT]
    low, high = EDGE_DIGIT_HEIGHTS[0] * heights.max(), EDGE_DIGIT_HEIGHTS[1] * heights.max()
    middles = stats[at_edge, cv2.CC_STAT_TOP] + stats[at_edge, cv2.CC_STAT_HEIGHT] / 2
    level = (tops.min() <= middles) & (middles <= (tops + heights).max())
    tall = (low <= stats[at_edge, cv2.CC_STAT_HEIGHT]) & (stats[at_edge, cv2.CC_STAT_HEIGHT] <= high)
    return bool((level & tall).any())


def _cut_by_edge(region: np.ndarray, labels: np.ndarray, stats: np.ndarray, touching: np.ndarray) -> bool:
    """Whether one of the ``touching`` components (labels of OpenCV's ``labels`` and ``stats``) is at least
    :data:`CUT_HEIGHT` of the shorter side tall with over half of its pixels well inside the paper ``region`` (bool
    (H, W), eroded by :data:`CUT_INSIDE` px): a mark the sheet's edge cut. Each component is looked at within its own box."""
    tall = [i for i in touching if stats[i, cv2.CC_STAT_HEIGHT] >= CUT_HEIGHT * min(labels.shape)]
    if not tall:
        return False
    inner = cv2.erode(region.astype(np.uint8), np.ones((2 * CUT_INSIDE + 1, 2 * CUT_INSIDE + 1), np.uint8))
    for i in tall:
        x, y, width, height = stats[i, :4]
        box = np.s_[y : y + height, x : x + width]
        if inner[box][labels[box] == i].mean() > 0.5:
            return True
    return False
