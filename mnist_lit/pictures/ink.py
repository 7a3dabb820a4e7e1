"""A photo or drawing -> where the ink is: grayscale at a bounded size, the sheet found and straightened,
uneven light and shadows divided out, ruled and squared lines removed (:mod:`mnist_lit.pictures.rules`).

The steps follow how a person reads a photo of a handwritten digit: find the sheet of paper (a large smooth
region, the table around it is textured or darker), look at it square-on, judge the ink against the paper right
next to it (not against the whole picture, which a shadow or a lighting gradient makes uneven), and ignore the
printed lines of notebook paper. OpenCV (morphology, contours, perspective) on NumPy arrays does it all.

Units: pixel values are 0-255 (``uint8`` or ``float32``); "darkness" is the fraction of the local paper
brightness that the ink takes away, ``1 - pixel / background``, in [0, 1] (0 = paper, 1 = black ink), so a
shadow that halves both paper and ink leaves it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from mnist_lit.pictures.allocator import keep_freed_memory
from mnist_lit.pictures.decode import ImageSource, load_gray

# OpenCV single-threaded for the whole process: on pictures analysed at most WORK_SIDE px wide its worker threads
# cost more CPU than they save, and pictures are read side by side anyway (DataLoader workers, server requests).
cv2.setNumThreads(1)
# Freed arrays stay in the process for the next picture instead of being faulted in afresh from the kernel.
keep_freed_memory()

#: Pictures are analysed with their longest side at most this many pixels (area-averaged down): a digit
#: filling a tenth of a phone photo keeps about 50 px, twice MNIST's 20 px box.
WORK_SIDE = 512
#: Smaller pictures (e.g. a 28x28 MNIST digit) are enlarged (bicubic) to at least this long side, so that
#: their strokes span several pixels, as in a photo.
MIN_SIDE = 192
#: The local paper brightness is a morphological closing (max then min filter) whose square window is this
#: fraction of the picture's shorter side: wider than any pen stroke of a digit that fills the picture
#: (MNIST strokes are about 15% of the 28 px frame), and a closing keeps ramps and hard shadow edges exactly.
BACKGROUND_WINDOW = 0.22
#: A light region reaching deeper than this fraction of the shorter side (distance to its edge) is paper,
#: not a stroke (a pen of 20 px on a 280 px canvas reaches 0.036; a strip of paper on a table 0.07 and more).
THICK_LIGHT = 0.05
#: A dark part at most this level (0-255) is a black background: a drawing canvas or an MNIST image.
BLACK_LEVEL = 24
#: Gaussian sigma (px) of the smoothing before the background is taken, so camera noise does not raise it.
DENOISE_SIGMA = 1.0
#: A pixel is "textured" when its darkness exceeds this; paper's grain and camera noise stay below it,
#: wood grain, cloth and carpet do not.
TEXTURE_DARKNESS = 0.045
#: ... and a region is "smooth" (paper) where under SMOOTH_FRACTION of the pixels of a square window
#: (TEXTURE_WINDOW of the picture's shorter side) are textured.
SMOOTH_FRACTION, TEXTURE_WINDOW = 0.4, 0.06
#: The sheet must cover at least this fraction of the picture to be used ...
MIN_SHEET_AREA = 0.08
#: ... and is only cut out (and straightened) when it covers less than this fraction: else it fills the frame.
FULL_FRAME = 0.88
#: Smooth regions of at least SHEET_PART of the largest one's area are more of the same sheet (cut off by a
#: shadow's edge) when the two, their gap closed (up to SHEET_GAP texture windows), fill SHEET_SOLIDITY of their hull.
SHEET_PART, SHEET_GAP, SHEET_SOLIDITY = 0.1, 3, 0.9
#: The paper's noise is measured on every NOISE_STRIDE-th pixel of every NOISE_STRIDE-th row (a median needs no more).
NOISE_STRIDE = 3


@dataclass
class InkMap:
    """What :func:`ink_map` found in one picture.

    Attributes:
        darkness: float32 (H, W) in [0, 1] on the straightened sheet (ink high, paper and lines removed 0).
        region: bool (H, W), the part of ``darkness`` that is paper (not table, not outside the sheet).
        to_picture: float64 (3, 3) homography mapping ``darkness`` pixel coordinates (x, y, 1) to the
            coordinates of the upright picture as the user sees it (after its EXIF orientation).
        picture_size: (width, height) of the upright picture, px.
        light_ink: True when the ink was lighter than its background (white chalk on a board, a drawing
            canvas), so the picture was inverted before the rest.
        sheet_found: True when a sheet with a table around it was found and cut out.
        noise: robust sigma of ``darkness`` on the paper (1.4826 x median absolute deviation).
    """

    darkness: np.ndarray
    region: np.ndarray
    to_picture: np.ndarray
    picture_size: tuple[int, int]
    light_ink: bool
    sheet_found: bool
    noise: float


def _work_size(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """``gray`` at analysis size (longest side between MIN_SIDE and WORK_SIDE) and the factor applied."""
    height, width = gray.shape
    longest = max(height, width)
    factor = WORK_SIDE / longest if longest > WORK_SIDE else MIN_SIDE / longest if longest < MIN_SIDE else 1.0
    if factor == 1.0:
        return gray, 1.0
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC), factor


def _window(shape: tuple[int, int], fraction: float, minimum: int = 3) -> int:
    return max(minimum, int(fraction * min(shape)) | 1)


def darkness_map(gray: np.ndarray, smooth: np.ndarray | None = None) -> np.ndarray:
    """``1 - gray / background`` in [0, 1], float32, with the background a closing of the denoised picture
    (:data:`BACKGROUND_WINDOW`); pixels darker than their surroundings by a stroke's width get high values.
    ``smooth``: ``gray`` already denoised (:func:`denoise`), when the caller has it."""
    smooth = denoise(gray) if smooth is None else smooth
    side = _window(gray.shape, BACKGROUND_WINDOW, 15)
    background = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    background = np.maximum(background, 8).astype(np.float32)  # black backgrounds: no meaningful ratio
    darkness = smooth.astype(np.float32)
    np.divide(darkness, background, out=darkness)  # in place: one array instead of four temporaries
    np.subtract(1.0, darkness, out=darkness)
    return np.clip(darkness, 0.0, 1.0, out=darkness)


def denoise(gray: np.ndarray) -> np.ndarray:
    """``gray`` (uint8) blurred with a Gaussian of sigma :data:`DENOISE_SIGMA`, so camera noise does not count."""
    return cv2.GaussianBlur(gray, (0, 0), DENOISE_SIGMA)


def _median_of_counts(counts: np.ndarray) -> float:
    """The median (``np.median``'s, the mean of the two middle values for an even count) of the values whose
    counts (index = value) are given."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    lower = int(np.searchsorted(cumulative, (total - 1) // 2, side="right"))
    upper = int(np.searchsorted(cumulative, total // 2, side="right"))
    return (lower + upper) / 2


def ink_is_light(gray: np.ndarray, smooth: np.ndarray | None = None) -> bool:
    """True when the strokes are lighter than their background (a drawing canvas, an MNIST image, chalk).

    Otsu's threshold splits the picture into light and dark. The ink is light when light pixels are the
    minority and either the dark part is near black (median at most :data:`BLACK_LEVEL`: a canvas, MNIST)
    or no light pixel lies deeper than :data:`THICK_LIGHT` of the shorter side inside a light region (strokes
    are thin; a sheet of paper lying on a darker table is not). Everything else, faint pencil included,
    counts as dark ink on light paper, the usual photo. Counts and the median come from one 256-bin histogram.
    ``smooth``: ``gray`` already denoised (:func:`denoise`), when the caller has it.
    """
    smooth = denoise(gray) if smooth is None else smooth
    level, _ = cv2.threshold(smooth, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)  # light: above ``level``
    counts = cv2.calcHist([smooth], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    dark = counts[: int(level) + 1]
    if 2 * int(dark.sum()) <= smooth.size:  # light pixels are at least half
        return False
    if _median_of_counts(dark) <= BLACK_LEVEL:
        return True
    return _thin_light((smooth > level).astype(np.uint8), THICK_LIGHT * min(gray.shape))


def _thin_light(light: np.ndarray, limit: float) -> bool:
    """Whether no pixel of ``light`` (uint8 0/1) lies ``limit`` px or deeper inside it: OpenCV's 3x3 L2 distance
    transform, its maximum below ``limit``. That chamfer distance is between 0.955 and 1.3693 (OpenCV's axis and
    diagonal steps) times the chessboard distance to the nearest dark pixel, so an erosion by a square settles
    most pictures (a sheet is far deeper, strokes far thinner) and the transform is run only in between."""
    square = partial(cv2.getStructuringElement, cv2.MORPH_RECT)
    deep = math.ceil(limit / 0.955 * 1.001)  # a pixel this far (chessboard) from the dark is at least ``limit`` deep
    if cv2.countNonZero(cv2.erode(light, square((2 * deep - 1, 2 * deep - 1)))):
        return False
    shallow = math.floor(limit / 1.3693 * 0.999)  # all pixels this close to the dark are less than ``limit`` deep
    if not cv2.countNonZero(cv2.erode(light, square((2 * shallow + 1, 2 * shallow + 1)))):
        return True
    return float(cv2.distanceTransform(light, cv2.DIST_L2, 3).max()) < limit


def _sheet_quad(darkness: np.ndarray) -> np.ndarray | None:
    """Corners float32 (4, 2) (x, y) of the sheet of paper: the largest smooth region, if a table (textured
    or darker) surrounds it; None when the picture is all sheet or no sheet stands out."""
    height, width = darkness.shape
    textured = (darkness > TEXTURE_DARKNESS).astype(np.uint8)
    side = _window(darkness.shape, TEXTURE_WINDOW, 5)
    counts = cv2.boxFilter(textured, cv2.CV_32S, (side, side), normalize=False)  # textured pixels per window
    calm = (counts < math.ceil(SMOOTH_FRACTION * side * side)).astype(np.uint8)  # whole counts: an integer limit
    smooth = cv2.erode(calm, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))  # cut thin links to the table
    count, labels = cv2.connectedComponents(smooth, connectivity=4)
    if count < 2:
        return None
    areas = np.bincount(labels.ravel(), minlength=count).astype(np.int32)  # OpenCV's stats cost more here
    grow = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    order = 1 + np.argsort(-areas[1:])
    sheet = cv2.dilate((labels == order[0]).astype(np.uint8), grow)
    if int(sheet.sum()) < MIN_SHEET_AREA * height * width:  # measured grown back: a small sheet erodes to little
        return None
    bridge = cv2.getStructuringElement(cv2.MORPH_RECT, (SHEET_GAP * side, SHEET_GAP * side))
    for part in order[1:]:  # the rest of a sheet cut in two by a shadow's edge: close by, together convex
        if areas[part] < SHEET_PART * areas[order[0]]:
            break
        part_grown = cv2.dilate((labels == part).astype(np.uint8), grow)
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


def _solidity(region: np.ndarray) -> float:
    """The fraction of its convex hull that a uint8 0/1 region (all its pieces) fills; 0 when it is in pieces."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1:
        return 0.0
    return float(region.sum()) / max(1.0, cv2.contourArea(cv2.convexHull(contours[0])))


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


def straighten_sheet(gray: np.ndarray, darkness: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The sheet cut out of ``gray`` and warped to a rectangle (perspective), if one was found.

    Returns:
        (sheet gray uint8 (h, w), region bool (h, w) of paper pixels, homography float64 (3, 3) from sheet
        to ``gray`` pixel coordinates), or None.
    """
    quad = _sheet_quad(darkness)
    if quad is None:
        return None
    tl, tr, br, bl = _upright_order(quad)
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    scale = min(1.0, WORK_SIDE / max(width, height))
    size = (max(16, round(width * scale)), max(16, round(height * scale)))
    target = np.array([[0, 0], [size[0] - 1, 0], [size[0] - 1, size[1] - 1], [0, size[1] - 1]], np.float32)
    to_sheet = cv2.getPerspectiveTransform(np.array([tl, tr, br, bl], np.float32), target)
    sheet = cv2.warpPerspective(gray, to_sheet, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(np.full(gray.shape, 255, np.uint8), to_sheet, size, flags=cv2.INTER_NEAREST)
    margin = max(3, round(0.015 * min(size)))  # the sheet's own edge and a sliver of table are not ink
    region = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))) > 0
    return sheet, region, np.linalg.inv(to_sheet)


def ink_map(source: ImageSource, max_pixels: int) -> tuple[InkMap, np.ndarray]:
    """Decode ``source`` and find its ink: see the module docstring for the steps.

    Returns:
        the :class:`InkMap` and the picture in grayscale at analysis size (uint8 (H, W)), from which
        :func:`ink_map_of` can look again without the sheet.

    Raises:
        ImageTooLargeError, ImageError: see :func:`mnist_lit.pictures.decode.open_image`.
    """
    gray, picture_size = load_gray(source, max_pixels)
    return ink_map_of_gray(gray, picture_size)


def ink_map_of_gray(gray: np.ndarray, picture_size: tuple[int, int]) -> tuple[InkMap, np.ndarray]:
    """:func:`ink_map` of a picture already decoded by :func:`load_gray`: (the InkMap, the picture at analysis size)."""
    work, _ = _work_size(gray)
    return ink_map_of(work, picture_size), work


def ink_map_of(work: np.ndarray, picture_size: tuple[int, int], use_sheet: bool = True) -> InkMap:
    """The :class:`InkMap` of a grayscale picture at analysis size; ``use_sheet=False`` looks at the whole frame
    instead of cutting out a sheet."""
    smooth = denoise(work)
    light = ink_is_light(work, smooth)
    if light:
        work = 255 - work
        smooth = denoise(work)
    darkness = darkness_map(work, smooth)
    to_picture = np.diag([picture_size[0] / work.shape[1], picture_size[1] / work.shape[0], 1.0])
    region = np.ones(work.shape, bool)
    sheet = straighten_sheet(work, darkness) if use_sheet and not light else None
    if sheet is not None:
        work, region, to_work = sheet
        to_picture = to_picture @ to_work
        darkness = darkness_map(work) * region  # 0 off the paper
    return InkMap(darkness, region, to_picture, picture_size, light, sheet is not None, paper_noise(darkness, region))


def paper_noise(darkness: np.ndarray, region: np.ndarray) -> float:
    """Robust sigma of ``darkness`` (float32 (H, W)) on the paper ``region`` (bool (H, W)): 1.4826 x the median
    absolute deviation, of every :data:`NOISE_STRIDE`-th pixel both ways (the medians of a regular sample)."""
    values = darkness[::NOISE_STRIDE, ::NOISE_STRIDE][region[::NOISE_STRIDE, ::NOISE_STRIDE]]
    if not values.size:
        return 0.0
    median = float(np.median(values))
    return 1.4826 * float(np.median(np.abs(values - median)))
