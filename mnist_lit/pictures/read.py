"""A picture -> MNIST-style crops of the digits in it (:func:`read_picture`), with their boxes in the picture."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image

from mnist_lit.pictures.decode import MAX_IMAGE_PIXELS, ImageSource, source_name
from mnist_lit.pictures.frame import MIN_INK_PIXELS, fit_to_mnist_frame
from mnist_lit.pictures.ink import InkMap, ink_map_of, ink_map_of_gray, load_gray
from mnist_lit.pictures.mask import thresholds
from mnist_lit.pictures.segment import Marks, find_marks
from mnist_lit.pictures.shapes import crop_refusal, row_slope
from mnist_lit.pictures.worksize import WORK_SIDE, thin_refusal

#: The ink level a digit's crop is stretched to: this percentile of the darkness of its ink pixels.
INK_LEVEL_PERCENTILE = 85
#: A digit's crop is enlarged this many times (bicubic) before it is fitted to MNIST's 20 px box, so that the fit
#: averages it down as MNIST's size normalisation did (from 128 px scans): a digit of a number at the 320 px
#: analysis size is often only 20-40 px tall, and fitted from that size its strokes come out coarse.
CROP_ENLARGE = 2
#: A row of at least LEVEL_MIN_DIGITS marks falling or rising by LEVEL_MIN_DEGREES or more is levelled: each digit
#: is turned by the row's angle before it is fitted (MNIST's digits stand upright; the sheet search straightens a
#: page only when its edges show).
LEVEL_MIN_DIGITS, LEVEL_MIN_DEGREES = 3, 5.0
#: When a mark runs into the edge of the sheet found, the whole frame is read again, keeping the marks on the
#: sheet grown by this fraction of the frame's shorter side.
SHEET_GROWTH = 0.15
#: ... except a mark with at least EDGE_SHARE of its ink within EDGE_BAND px (analysis size) of the edge of the sheet
#: found: it runs along that edge, so it is the edge itself (a hard shadow's step, the paper's border against the
#: table), not writing. Of the digits of the development seeds' photos (1-4) read on this second look, none has over
#: 0.43 of its ink in that band; blank sheets in a hard shadow had their edge read as a "1" at 0.92-1.0.
EDGE_BAND, EDGE_SHARE = 8, 0.6  # 12 px at the earlier 512 px analysis size, where the 0.43 was measured
#: Pixels of the crop within this many pixels of the digit's own ink are kept (the anti-aliased rim);
#: farther ones belong to neighbours or dirt and are cleared.
RIM = 1
#: A 28x28 picture whose border pixels are all at most this bright (0-255) has MNIST's black background.
MNIST_BORDER = 32


@dataclass
class PictureDigits:
    """The digits found in one picture, left to right.

    Attributes:
        name: the picture's name for messages (its path, or ``<image>``).
        pixels: uint8 (K, 1, 28, 28), MNIST-style (white ink on black, longest side of the ink 20 px, centre
            of mass at (14, 14)); K == 0 when there is no digit.
        quads: float32 (K, 4, 2), each digit's box corners (x, y) in the upright picture's pixels (after its
            EXIF orientation): top-left, top-right, bottom-right, bottom-left. A box on a sheet photographed
            at an angle is a quadrilateral in the picture.
        picture_size: (width, height) of the upright picture, px.
        refusal: "" or the one-line reason there is no digit ("no digit found ...", "not a digit: ...",
            "not read: ..." for a picture too long and thin to read).
    """

    name: str
    pixels: torch.Tensor
    quads: np.ndarray
    picture_size: tuple[int, int]
    refusal: str = ""
    light_ink: bool = field(default=False, repr=False)

    @property
    def boxes(self) -> np.ndarray:
        """int (K, 4): ``x0, y0, x1, y1`` of each quad's bounding rectangle, clipped to the picture (x1, y1 exclusive)."""
        if not len(self.quads):
            return np.zeros((0, 4), np.int64)
        low = np.floor(self.quads.min(1))
        high = np.ceil(self.quads.max(1))
        width, height = self.picture_size
        boxes = np.concatenate([low, high], 1)
        return np.clip(boxes, 0, [width, height, width, height]).astype(np.int64)


def row_turn(boxes: np.ndarray) -> float:
    """Degrees to turn each digit by (anticlockwise as seen) so that a photo of a turned page reads upright: the row's
    angle, when the row of ``boxes`` (int (K, 4)) holds at least :data:`LEVEL_MIN_DIGITS` marks and falls or rises by
    :data:`LEVEL_MIN_DEGREES` or more; else 0. The row's slope is taken as the photo's turn, so digits written upright
    along a steeply sloping line are turned too (docs/pictures.md)."""
    if len(boxes) < LEVEL_MIN_DIGITS:
        return 0.0
    degrees = math.degrees(math.atan(row_slope(boxes)))
    return degrees if abs(degrees) >= LEVEL_MIN_DEGREES else 0.0


def digit_crop(ink: InkMap, box: np.ndarray, mask: np.ndarray, turn: float = 0.0) -> torch.Tensor:
    """One digit's ink as MNIST pixels uint8 (28, 28): its darkness inside ``box`` (x0, y0, x1, y1), kept within
    :data:`RIM` px of its own ink ``mask``, stretched so its ink level (:data:`INK_LEVEL_PERCENTILE`) is 255,
    turned by ``turn`` degrees (:func:`row_turn`), then fitted and centred by
    :func:`mnist_lit.pictures.frame.fit_to_mnist_frame`."""
    x0, y0, x1, y1 = (int(v) for v in box)
    pad = RIM + 1 + (max(x1 - x0, y1 - y0) // 3 if turn else 0)  # room for the corners that turn out of the box
    height, width = ink.darkness.shape
    X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)
    darkness = ink.darkness[Y0:Y1, X0:X1]
    own = np.zeros(darkness.shape, np.uint8)
    own[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = mask
    near = cv2.dilate(own, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM + 1, 2 * RIM + 1))) > 0
    low = thresholds(ink.noise)[0] / 2
    level = max(float(np.percentile(darkness[own > 0], INK_LEVEL_PERCENTILE)), low + 1e-3)
    values = (np.clip((darkness - low) / (level - low), 0.0, 1.0) * near).astype(np.float32)
    if turn:
        centre = ((values.shape[1] - 1) / 2, (values.shape[0] - 1) / 2)
        turning = cv2.getRotationMatrix2D(centre, turn, 1.0)
        values = np.asarray(cv2.warpAffine(values, turning, values.shape[::-1], flags=cv2.INTER_LINEAR), np.float32)
    image = Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    enlarged = (image.width * CROP_ENLARGE, image.height * CROP_ENLARGE)  # see CROP_ENLARGE
    return fit_to_mnist_frame(image.resize(enlarged, Image.Resampling.BICUBIC))


def _picture_quad(ink: InkMap, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], np.float64) @ ink.to_picture.T
    return (corners[:, :2] / corners[:, 2:]).astype(np.float32)


def _near_sheet(marks: Marks, sheet: InkMap, whole: InkMap) -> Marks:
    """The marks of ``whole`` (the frame) whose box centre lies on the sheet of ``sheet`` grown by
    :data:`SHEET_GROWTH` of the frame's shorter side (the sheet was too small, not wrong), less those running
    along the sheet's edge (:data:`EDGE_SHARE` of their ink within :data:`EDGE_BAND` px of it)."""
    if marks.refusal or not len(marks.boxes):
        return marks
    to_sheet = np.linalg.inv(np.linalg.inv(whole.to_picture) @ sheet.to_picture)  # frame -> sheet is its inverse
    height, width = whole.darkness.shape
    on_sheet = cv2.warpPerspective(
        sheet.region.astype(np.uint8), np.linalg.inv(to_sheet), (width, height), flags=cv2.INTER_NEAREST
    )
    edge = cv2.morphologyEx(on_sheet, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    near_edge = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 3) <= EDGE_BAND
    grow = max(3, int(SHEET_GROWTH * min(height, width))) | 1
    on_sheet = cv2.dilate(on_sheet, cv2.getStructuringElement(cv2.MORPH_RECT, (grow, grow)))
    keep = [
        i
        for i, ((x0, y0, x1, y1), mask) in enumerate(zip(marks.boxes, marks.masks, strict=True))
        if on_sheet[(y0 + y1) // 2, (x0 + x1) // 2] and near_edge[y0:y1, x0:x1][mask].mean() < EDGE_SHARE
    ]
    return Marks(marks.boxes[keep], [marks.masks[i] for i in keep])


def _find_digits(ink: InkMap, gray: np.ndarray) -> tuple[InkMap, Marks]:
    """The marks :func:`mnist_lit.pictures.segment.find_marks` finds in ``ink`` (the picture's :class:`InkMap`;
    ``gray``: uint8 (H, W), the picture at analysis size), with the ink map they are in: the whole frame's when a
    mark ran into the edge of the sheet found and none was left (the sheet was cut too small, :func:`_near_sheet`).
    A picture too long and thin for its digits to keep :data:`~mnist_lit.pictures.worksize.MIN_STRIP_SIDE` px
    is refused (:func:`~mnist_lit.pictures.worksize.thin_refusal`) unless nothing stood out in it at all."""
    marks: Marks = find_marks(ink)
    if marks.cut and marks.refusal:
        whole = ink_map_of(gray, ink.picture_size, use_sheet=False)
        again = _near_sheet(find_marks(whole), ink, whole)
        if not again.refusal and len(again.boxes):
            ink, marks = whole, again
    thin = thin_refusal(*ink.picture_size)
    if thin and not marks.refusal.startswith("no digit found"):  # what was found cannot be read at that size
        marks = Marks(marks.boxes[:0], [], thin)
    return ink, marks


def mnist_format(gray: np.ndarray) -> torch.Tensor | None:
    """uint8 (1, 1, 28, 28) when ``gray`` (uint8 (H, W), as :func:`~mnist_lit.pictures.ink.load_gray` returns it) is
    already in MNIST's own format, else None: 28x28 pixels, light ink on a black background (its border at most
    :data:`MNIST_BORDER` bright) and at least ``MIN_INK_PIXELS`` pixels of ink (above 127). Such a picture, e.g. a
    test digit saved as PNG or a 28x28 canvas, is exactly what the network reads, so it is taken as it is."""
    if gray.shape != (28, 28):
        return None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.max() > MNIST_BORDER or int((gray > 127).sum()) < MIN_INK_PIXELS:
        return None
    return torch.from_numpy(gray.copy()).reshape(1, 1, 28, 28)


def read_picture(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> PictureDigits:
    """Find the digits in a picture (a photo, scan or drawing; one digit or a whole number) and cut each out
    MNIST-style, left to right.

    A picture already in MNIST's format (:func:`mnist_format`) is taken as it is. Otherwise the steps are:
    :func:`mnist_lit.pictures.ink.ink_map` (decode at a bounded size, find and straighten the sheet,
    divide out uneven light and shadows), :func:`mnist_lit.pictures.segment.find_marks` (remove ruled lines,
    connected components, merge, split, order, ink-statistics refusals; once more on the whole frame when a
    mark ran into the edge of the sheet found), then :func:`digit_crop` per digit.
    Time and memory are bounded by the header check and the analysis size
    (:data:`~mnist_lit.pictures.worksize.WORK_PIXELS`), whatever the input's size and shape; a picture too long and
    thin for that size to hold its digits is refused (:func:`~mnist_lit.pictures.worksize.thin_refusal`).

    Args:
        source: a file path, the file's bytes, a binary file object, or a PIL image.
        max_pixels: the largest ``width * height`` accepted before decoding.

    Returns:
        :class:`PictureDigits`; a picture without a digit comes back with K == 0 and ``refusal`` set (the
        model is not needed for that; :func:`mnist_lit.pictures.verdict.read_digits` adds its own refusals).

    Raises:
        ImageTooLargeError, ImageError: a missing, empty, unreadable, damaged or oversized file
            (:func:`mnist_lit.pictures.decode.open_image`); one-line messages starting with the file's name.
    """
    name = source_name(source)
    picture, picture_size = load_gray(source, max_pixels, WORK_SIDE)
    as_is = mnist_format(picture)
    if as_is is not None:  # the network's own input format: nothing to find or re-centre
        frame = np.array([[[0, 0], [28, 0], [28, 28], [0, 28]]], np.float32)  # the digit's box: the whole picture
        return PictureDigits(name, as_is, frame, picture_size, "", light_ink=True)
    ink, marks = _find_digits(*ink_map_of_gray(picture, picture_size))
    turn = row_turn(marks.boxes)
    crops = [digit_crop(ink, box, mask, turn) for box, mask in zip(marks.boxes, marks.masks, strict=False)]
    reasons = [crop_refusal(crop.numpy(), len(crops)) for crop in crops]
    busy = [k for k, reason in enumerate(reasons) if reason]
    if busy:  # a spiral, a star, a W, a tree: a shape no digit has
        which = "the mark" if len(crops) == 1 else f"mark {busy[0] + 1} of {len(crops)}"
        marks = Marks(marks.boxes[:0], [], f"not a digit: {which} {reasons[busy[0]]}")
        crops = []
    pixels = torch.stack(crops).unsqueeze(1) if crops else torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    quads = np.stack([_picture_quad(ink, box) for box in marks.boxes]) if crops else np.zeros((0, 4, 2), np.float32)
    refusal = f"{name}: {marks.refusal}" if marks.refusal else ""
    return PictureDigits(name, pixels, quads, ink.picture_size, refusal, ink.light_ink)
