"""A photo or drawing -> where the ink is: grayscale at a bounded size (:mod:`mnist_lit.pictures.worksize`), the
sheet found and straightened (:mod:`mnist_lit.pictures.sheet`), uneven light and shadows divided out, ruled and
squared lines removed (:mod:`mnist_lit.pictures.rules`).

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

from mnist_lit.pictures.decode import ImageSource, load_gray
from mnist_lit.pictures.sheet import straighten_sheet, window
from mnist_lit.pictures.worksize import WORK_SIDE, work_shape

# OpenCV single-threaded for the whole process: on pictures analysed at WORK_SIDE px (WORK_PIXELS at most) its threads
# cost more CPU than they save, and pictures are read side by side anyway (DataLoader workers, server requests).
cv2.setNumThreads(1)

#: A sheet is looked for only in a picture at most this many times as long as it is wide: a photo of paper is under
#: about 2:1 (A4 1.41, a phone's 16:9 frame 1.78); a longer one is a strip cropped to its writing, in which a "sheet"
#: found covered part of the strip and the digits beyond it were left out (20 digits in 20479x40 px read as 10).
SHEET_MAX_ASPECT = 3.0
#: The local paper brightness is a morphological closing (max then min filter) whose square window is this
#: fraction of the picture's shorter side: wider than any pen stroke of a digit that fills the picture
#: (MNIST strokes are about 15% of the 28 px frame), and a closing keeps ramps and hard shadow edges exactly.
BACKGROUND_WINDOW = 0.22
#: A light region reaching deeper than this fraction of the shorter side (distance to its edge) is paper,
#: not a stroke (a pen of 20 px on a 280 px canvas reaches 0.036; a strip of paper on a table 0.07 and more).
THICK_LIGHT = 0.05
#: A dark part at most this level (0-255) is a black background: a drawing canvas or an MNIST image.
BLACK_LEVEL = 24
#: Gaussian sigma (px) of the smoothing before the background is taken, so camera noise does not raise it: px of the
#: picture at DENOISE_SIDE px (or its own size when smaller), so the blur shrinks with the analysis size where a
#: picture is reduced below that (a 640x480 photo at 320 px: 0.625 px) and stays 1 px on small pictures.
DENOISE_SIGMA, DENOISE_SIDE = 1.0, 512
#: A pixel is "textured" when its darkness exceeds this; paper's grain and camera noise stay below it,
#: wood grain, cloth and carpet do not (the sheet search, :mod:`mnist_lit.pictures.sheet`, looks for smooth regions).
TEXTURE_DARKNESS = 0.045
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


def _work_size(gray: np.ndarray) -> np.ndarray:
    """``gray`` (uint8 (H, W)) at analysis size (:func:`mnist_lit.pictures.worksize.work_shape`: longest side
    between MIN_SIDE and WORK_SIDE, a long, thin picture's shorter side kept), area-averaged down or bicubic up."""
    height, width = gray.shape
    size = work_shape(width, height)
    if size == (width, height):
        return gray
    return cv2.resize(
        gray, size, interpolation=cv2.INTER_AREA if size[0] * size[1] < width * height else cv2.INTER_CUBIC
    )


def darkness_map(gray: np.ndarray, smooth: np.ndarray | None = None) -> np.ndarray:
    """``1 - gray / background`` in [0, 1], float32, with the background a closing of the denoised picture
    (:func:`paper_level`); pixels darker than their surroundings by a stroke's width get high values.
    ``smooth``: ``gray`` already denoised (:func:`denoise`), when the caller has it."""
    smooth = denoise(gray) if smooth is None else smooth
    return darkness_of(smooth, paper_level(smooth))


def paper_level(smooth: np.ndarray) -> np.ndarray:
    """The local paper brightness, uint8 (H, W): a closing of the denoised picture ``smooth`` (uint8) with a
    square window of :data:`BACKGROUND_WINDOW` of its shorter side, raised to at least 8 (on a black background a
    ratio to it means nothing)."""
    side = window(smooth.shape, BACKGROUND_WINDOW, 15)
    background = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    return np.maximum(background, 8, out=background)


def darkness_of(smooth: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``1 - smooth / background`` clipped to [0, 1], float32 (H, W), of two uint8 (H, W) pictures: the denoised
    picture and its :func:`paper_level`."""
    darkness = smooth.astype(np.float32)
    background = background.astype(np.float32)
    np.divide(darkness, background, out=darkness)  # in place: one array instead of four temporaries
    np.subtract(1.0, darkness, out=darkness)
    return np.clip(darkness, 0.0, 1.0, out=darkness)


def _texture_limits() -> np.ndarray:
    """uint8 (256,): for each paper level ``b``, the grey levels ``s < limits[b]`` are the ones whose
    :func:`darkness_of` exceeds :data:`TEXTURE_DARKNESS` (float32 division is monotonic, so they are the darkest
    ones); computed with :func:`darkness_of` itself, so a look-up gives exactly its comparison."""
    levels = np.arange(256, dtype=np.uint8)
    paper = np.maximum(levels, 8)  # as paper_level leaves it
    textured = darkness_of(np.tile(levels, (256, 1)), np.tile(paper[:, None], (1, 256))) > TEXTURE_DARKNESS
    limits = textured.sum(1)
    if not (textured == (levels[None, :] < limits[:, None])).all():  # would need a two-level table
        raise RuntimeError("textured grey levels are not the darkest ones")
    return limits.astype(np.uint8)


def textured_pixels(smooth: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 (H, W): 255 where the :func:`darkness_of` ``smooth`` against ``background`` (both uint8 (H, W))
    exceeds :data:`TEXTURE_DARKNESS`, else 0, without computing the darkness (one table look-up per pixel)."""
    return cv2.compare(smooth, cv2.LUT(background, _TEXTURE_LIMITS), cv2.CMP_LT)


def denoise(gray: np.ndarray, sigma: float = DENOISE_SIGMA) -> np.ndarray:
    """``gray`` (uint8) blurred with a Gaussian of ``sigma`` px, so camera noise does not count."""
    return cv2.GaussianBlur(gray, (0, 0), sigma)


def denoise_sigma(work_shape: tuple[int, ...], picture_size: tuple[int, int]) -> float:
    """The :func:`denoise` sigma, px, for a picture of ``picture_size`` (w, h) analysed at ``work_shape`` (H, W):
    :data:`DENOISE_SIGMA` px of the picture at :data:`DENOISE_SIDE` px (or its own size when smaller), at most
    :data:`DENOISE_SIGMA` (an enlarged small picture is blurred as much as one at its own size)."""
    reference = min(max(picture_size), DENOISE_SIDE)
    return DENOISE_SIGMA * min(1.0, max(work_shape) / reference)


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


_TEXTURE_LIMITS = _texture_limits()


def ink_map(source: ImageSource, max_pixels: int) -> tuple[InkMap, np.ndarray]:
    """Decode ``source`` and find its ink: see the module docstring for the steps.

    Returns:
        the :class:`InkMap` and the picture in grayscale at analysis size (uint8 (H, W)), from which
        :func:`ink_map_of` can look again without the sheet.

    Raises:
        ImageTooLargeError, ImageError: see :func:`mnist_lit.pictures.decode.open_image`.
    """
    gray, picture_size = load_gray(source, max_pixels, WORK_SIDE)
    return ink_map_of_gray(gray, picture_size)


def ink_map_of_gray(gray: np.ndarray, picture_size: tuple[int, int]) -> tuple[InkMap, np.ndarray]:
    """:func:`ink_map` of a picture already decoded by :func:`load_gray`: (the InkMap, the picture at analysis size)."""
    work = _work_size(gray)
    return ink_map_of(work, picture_size), work


def ink_map_of(work: np.ndarray, picture_size: tuple[int, int], use_sheet: bool = True) -> InkMap:
    """The :class:`InkMap` of a grayscale picture at analysis size (``work``: uint8 (H, W); ``picture_size``: the
    upright picture's (width, height), px); ``use_sheet=False`` looks at the whole frame instead of cutting out a
    sheet. A sheet cut out is straightened with its longest side at most :data:`WORK_SIDE` px, or the picture's
    own longest side where that is longer (a strip keeps its size)."""
    sigma = denoise_sigma(work.shape, picture_size)
    smooth = denoise(work, sigma)
    light = ink_is_light(work, smooth)
    if light:
        work = 255 - work
        smooth = denoise(work, sigma)
    background = paper_level(smooth)
    to_picture = np.diag([picture_size[0] / work.shape[1], picture_size[1] / work.shape[0], 1.0])
    region = np.ones(work.shape, bool)
    sheet = None
    if use_sheet and not light and max(work.shape) <= SHEET_MAX_ASPECT * min(work.shape):
        sheet = straighten_sheet(work, textured_pixels(smooth, background), max(WORK_SIDE, *work.shape))
    if sheet is None:
        darkness = darkness_of(smooth, background)
    else:
        work, region, to_work = sheet
        to_picture = to_picture @ to_work
        darkness = darkness_map(work, denoise(work, sigma)) * region  # 0 off the paper
    return InkMap(darkness, region, to_picture, picture_size, light, sheet is not None, paper_noise(darkness, region))


def paper_noise(darkness: np.ndarray, region: np.ndarray) -> float:
    """Robust sigma of ``darkness`` (float32 (H, W)) on the paper ``region`` (bool (H, W)): 1.4826 x the median
    absolute deviation, of every :data:`NOISE_STRIDE`-th pixel both ways (the medians of a regular sample)."""
    values = darkness[::NOISE_STRIDE, ::NOISE_STRIDE][region[::NOISE_STRIDE, ::NOISE_STRIDE]]
    if not values.size:
        return 0.0
    median = float(np.median(values))
    return 1.4826 * float(np.median(np.abs(values - median)))
