"""The sheet of paper in a photo: the largest smooth (untextured) region with a table around it, found in a mask
of textured pixels, and warped to an upright rectangle (OpenCV: box sums, morphology, connected components,
contours, perspective). :func:`mnist_lit.pictures.ink.ink_map_of` supplies the textured pixels."""

from __future__ import annotations

import math

import cv2
import numpy as np

#: A region is "smooth" (paper) where under SMOOTH_FRACTION of the pixels of a square window (TEXTURE_WINDOW of
#: the picture's shorter side) are textured (see :data:`mnist_lit.pictures.ink.TEXTURE_DARKNESS`).
SMOOTH_FRACTION, TEXTURE_WINDOW = 0.4, 0.06
#: The sheet must cover at least this fraction of the picture to be used ...
MIN_SHEET_AREA = 0.08
#: ... and is only cut out (and straightened) when it covers less than this fraction: else it fills the frame.
FULL_FRAME = 0.88
#: Smooth regions of at least SHEET_PART of the largest one's area are more of the same sheet (cut off by a
#: shadow's edge) when the two, their gap closed (up to SHEET_GAP texture windows), fill SHEET_SOLIDITY of their hull.
SHEET_PART, SHEET_GAP, SHEET_SOLIDITY = 0.1, 3, 0.9
#: Up to this many smooth regions their areas are counted one label at a time, beyond it by one histogram.
FEW_LABELS = 6


def window(shape: tuple[int, int], fraction: float, minimum: int = 3) -> int:
    """An odd window side, px: ``fraction`` of the shorter side of ``shape`` (H, W), at least ``minimum``."""
    return max(minimum, int(fraction * min(shape)) | 1)


def _smooth_regions(textured: np.ndarray) -> tuple[int, np.ndarray, int]:
    """Connected components (4-connected) of the smooth part of ``textured`` (uint8, 255 = textured), eroded
    by a texture window to cut thin links to the table: (count with the background, int32 labels, window side)."""
    side = window(textured.shape, TEXTURE_WINDOW, 5)
    sums = cv2.boxFilter(textured, cv2.CV_32S, (side, side), normalize=False)  # 255 x textured pixels per window
    limit = 255 * math.ceil(SMOOTH_FRACTION * side * side)  # whole counts: an integer limit
    calm = cv2.compare(sums, limit, cv2.CMP_LT)  # type: ignore[call-overload]  # a scalar operand: the stubs omit it
    smooth = cv2.erode(calm, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    count, labels = cv2.connectedComponents(smooth, connectivity=4)
    return count, labels, side


def _sheet_quad(textured: np.ndarray) -> np.ndarray | None:
    """Corners float32 (4, 2) (x, y) of the sheet of paper: the largest smooth region, if a table (textured
    or darker) surrounds it; None when the picture is all sheet or no sheet stands out.
    ``textured``: uint8 (H, W), 255 where textured, else 0."""
    height, width = textured.shape
    count, labels, side = _smooth_regions(textured)
    if count < 2:
        return None
    areas = _areas(labels, count)
    grow = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    order = 1 + np.argsort(-areas[1:])
    sheet = cv2.dilate(_equal(labels, int(order[0])), grow)
    if cv2.countNonZero(sheet) < MIN_SHEET_AREA * height * width:  # grown back: a small sheet erodes to little
        return None
    bridge = cv2.getStructuringElement(cv2.MORPH_RECT, (SHEET_GAP * side, SHEET_GAP * side))
    for part in order[1:]:  # the rest of a sheet cut in two by a shadow's edge: close by, together convex
        if areas[part] < SHEET_PART * areas[order[0]]:
            break
        part_grown = cv2.dilate(_equal(labels, int(part)), grow)
        union = cv2.morphologyEx(cv2.bitwise_or(sheet, part_grown), cv2.MORPH_CLOSE, bridge)
        if _solidity(union) >= SHEET_SOLIDITY:
            sheet = union
    contours, _ = cv2.findContours(sheet, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    if cv2.contourArea(hull) >= FULL_FRAME * height * width:
        return None
    quad = cv2.approxPolyDP(hull, 0.03 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float32)
    if len(quad) != 4:  # a sheet cut by the frame or curled: the smallest rotated rectangle around it
        quad = cv2.boxPoints(cv2.minAreaRect(hull)).astype(np.float32)
    return quad


def _areas(labels: np.ndarray, count: int) -> np.ndarray:
    """int32 (count,): the pixels of each label 0 .. count - 1 of ``labels`` (int32 (H, W)). A photo has a few smooth
    regions, so a count of each label's pixels (:data:`FEW_LABELS` or fewer) costs less than a histogram of the whole
    label image (and far less than OpenCV's per-component statistics)."""
    if count > FEW_LABELS:
        return np.bincount(labels.ravel(), minlength=count).astype(np.int32)
    areas = np.array([0] + [cv2.countNonZero(_equal(labels, k)) for k in range(1, count)], np.int32)
    areas[0] = labels.size - int(areas.sum())
    return areas


def _solidity(region: np.ndarray) -> float:
    """The fraction of its convex hull that a uint8 region (non-zero pixels, all its pieces) fills; 0 when it is in
    pieces."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1:
        return 0.0
    return float(cv2.countNonZero(region)) / max(1.0, cv2.contourArea(cv2.convexHull(contours[0])))


def _upright_order(quad: np.ndarray) -> np.ndarray:
    """The corners as (top-left, top-right, bottom-right, bottom-left) of the sheet turned the least: the
    sheet's edges are assumed closest to the picture's axes (people hold the phone roughly square to the page)."""
    centre = quad.mean(0)
    angles = np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0])
    order = np.argsort(angles)  # clockwise in image coordinates (y down), starting near (-pi)
    quad, angles = quad[order], angles[order]
    # the top-left corner: the one whose direction from the centre is closest to up-left (-135 deg)
    start = int(np.argmin(np.abs(np.angle(np.exp(1j * (angles + 0.75 * np.pi))))))
    return np.roll(quad, -start, axis=0)


def straighten_sheet(
    gray: np.ndarray, textured: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The sheet cut out of ``gray`` and warped to a rectangle (perspective), if one was found.

    Args:
        gray: uint8 (H, W), the picture at analysis size.
        textured: uint8 (H, W), 255 where ``gray`` is textured (table, wood grain, cloth), else 0.
        max_side: the straightened sheet's longest side is at most this many pixels.

    Returns:
        (sheet gray uint8 (h, w), region bool (h, w) of paper pixels, homography float64 (3, 3) from sheet
        to ``gray`` pixel coordinates), or None.
    """
    quad = _sheet_quad(textured)
    if quad is None:
        return None
    tl, tr, br, bl = _upright_order(quad)
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    scale = min(1.0, max_side / max(width, height))
    size = (max(16, round(width * scale)), max(16, round(height * scale)))
    target = np.array([[0, 0], [size[0] - 1, 0], [size[0] - 1, size[1] - 1], [0, size[1] - 1]], np.float32)
    to_sheet = cv2.getPerspectiveTransform(np.array([tl, tr, br, bl], np.float32), target)
    sheet = cv2.warpPerspective(gray, to_sheet, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(np.full(gray.shape, 255, np.uint8), to_sheet, size, flags=cv2.INTER_NEAREST)
    margin = max(3, round(0.015 * min(size)))  # the sheet's own edge and a sliver of table are not ink
    region = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))) > 0
    return sheet, region, np.linalg.inv(to_sheet)


def _equal(labels: np.ndarray, k: int) -> np.ndarray:
    """uint8 (H, W), 255 where ``labels == k``, else 0 (OpenCV's compare: no bool array to convert)."""
    return cv2.compare(labels, k, cv2.CMP_EQ)  # type: ignore[call-overload]  # a scalar operand: the stubs omit it
