"""One clean digit -> an MNIST-style uint8 (1, 28, 28) tensor, the model's input.

MNIST's digits are white strokes on black, size-normalised so the longest side of the ink fills
a 20x20 box (anti-aliased, aspect ratio kept), then placed in a 28x28 frame so that the centre of
mass of the pixels sits at the frame's centre (LeCun, Cortes, Burges, "The MNIST database of
handwritten digits", http://yann.lecun.com/exdb/mnist/). :func:`preprocess_image_uint8` bridges a picture
of one digit to that format with Pillow, NumPy and torch only; this module knows nothing about Lightning:

1. :func:`mnist_lit.pictures.decode.open_image` and :func:`~mnist_lit.pictures.decode.to_grayscale`:
   decoded within the pixel limit, upright, 8-bit grayscale.
2. :func:`normalise_ink`: invert when the border is light; estimate the background level and
   its noise from the border; map background and paper texture to 0 and ink to 255 with a linear
   ramp (the ramp keeps anti-aliased stroke edges, as MNIST has them).
3. :func:`fit_to_mnist_frame`: crop to the ink's bounding box (ignoring stray specks that hold
   under ``TRIM_FRACTION`` of the ink), scale the longest side to 20 px keeping the aspect ratio
   (antialiased), and paste it into 28x28 with its centre of mass at (14, 14).

Photos with paper, shadows, ruled lines or several digits go through :func:`mnist_lit.pictures.read.read_picture`,
which uses :func:`fit_to_mnist_frame` for each digit it finds.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mnist_lit.errors import ImageError, NoDigitFoundError
from mnist_lit.pictures.decode import MAX_IMAGE_PIXELS, ImageSource, one_line, open_image, source_name, to_grayscale

#: Side of the MNIST frame, px (the IDX images are 28x28).
FRAME_SIDE = 28
#: The longest side of the ink in the output, px (MNIST: digits normalised to a 20x20 box).
BOX_SIDE = 20
#: Where the centre of mass goes, in pixel-index coordinates (row, col) (MNIST test set: mean 14.0).
CENTRE = 14.0
#: Ink must stand out from the background by this many noise sigmas (robust, from the border) ...
NOISE_SIGMAS = 4.0
#: ... and by at least this many grey levels (of 255) to count as a digit.
MIN_CONTRAST = 32
#: Fewer ink pixels than this (at working resolution) means "no digit found".
MIN_INK_PIXELS = 4
#: The ramp from background (0) to ink (255) starts this fraction of the way from the background
#: level to the ink level (or ``NOISE_SIGMAS`` above the background noise, whichever is higher).
RAMP_START = 0.15
#: Up to this fraction of the ink's mass may fall outside the bounding box on each side, so one
#: speck of dirt far from the digit does not shrink the digit.
TRIM_FRACTION = 0.005


def _median_of_histogram(counts: torch.Tensor) -> float:
    """The lower median of the values whose counts (index = value) are given."""
    cumulative = counts.cumsum(0)
    return float(torch.searchsorted(cumulative, (cumulative[-1] + 1) // 2))


def normalise_ink(gray: Image.Image, name: str = "<image>") -> Image.Image:
    """Light-background pictures inverted, background and paper texture -> 0, ink -> 255.

    The background level is the median of the 1-px border and its noise sigma is
    1.4826 x the border's median absolute deviation (the normal-consistent MAD); pixels more than
    ``max(NOISE_SIGMAS * sigma, MIN_CONTRAST)`` above the background are ink candidates, and their
    median is the ink level. Pixels then go linearly from 0 at ``RAMP_START`` of the way from the
    background to the ink level (at least ``NOISE_SIGMAS`` sigmas above the background) to 255 at
    the ink level. Everything is computed from 256-bin histograms and applied as one lookup table.

    Args:
        gray: 8-bit grayscale PIL image (mode ``L``), ink either darker or lighter than the border.
        name: the picture's name, for the error message.

    Returns:
        PIL image, mode ``L``, same size: ink bright (255 at the ink level), background exactly 0.

    Raises:
        NoDigitFoundError: fewer than ``MIN_INK_PIXELS`` pixels stand out from the background.
    """
    width, height = gray.size
    strips = [(0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height)]
    border = torch.tensor([gray.crop(box).histogram() for box in strips], dtype=torch.int64).sum(0)
    counts = torch.tensor(gray.histogram(), dtype=torch.int64)
    invert = _median_of_histogram(border) > 127.5  # light paper, dark ink: make it MNIST's white on black
    if invert:
        border, counts = border.flip(0), counts.flip(0)
    background = _median_of_histogram(border)
    levels = torch.arange(256)
    deviation = torch.zeros(256, dtype=torch.int64).index_add_(0, (levels - int(background)).abs(), border)
    sigma = 1.4826 * _median_of_histogram(deviation)
    floor = background + max(NOISE_SIGMAS * sigma, MIN_CONTRAST)
    candidates = counts * (levels > floor)
    if int(candidates.sum()) < MIN_INK_PIXELS:
        raise NoDigitFoundError(
            f"{name}: no digit found (nothing stands out from the background); "
            "use a picture of one dark digit on light paper, or a light digit on dark"
        )
    ink = _median_of_histogram(candidates)
    start = background + max(RAMP_START * (ink - background), NOISE_SIGMAS * sigma)
    values = (255 - levels) if invert else levels
    lut = ((values - start) * (255.0 / (ink - start))).clamp(0, 255).round().to(torch.uint8)
    return gray.point(lut.tolist())


def _ink_span(profile: Image.Image) -> tuple[int, int]:
    """First and last index of a 1-D ink profile (a mode-``F`` image one pixel wide or high), leaving out
    ``TRIM_FRACTION`` of the mass at each end (cumulative sums in float64, in order)."""
    cumulative = np.cumsum(np.frombuffer(profile.tobytes(), np.float32), dtype=np.float64)
    total = float(cumulative[-1])
    first = int(np.searchsorted(cumulative, TRIM_FRACTION * total, side="right"))
    last = int(np.searchsorted(cumulative, (1.0 - TRIM_FRACTION) * total))
    return first, max(first, min(last, len(cumulative) - 1))


def _float_pixels(image: Image.Image) -> torch.Tensor:
    """A mode-``F`` PIL image as a float32 tensor (H, W)."""
    width, height = image.size
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.float32).view(height, width)


def fit_to_mnist_frame(ink: Image.Image) -> torch.Tensor:
    """Crop to the ink, fit its longest side to 20 px, centre its mass in 28x28 (MNIST's procedure).

    Row and column ink profiles come from Pillow's box resize to one column / one row (exact
    means, in float); the crop is resized with Pillow's antialiased bilinear filter, so a large
    picture is averaged down as MNIST's anti-aliased size normalisation did; the result is
    stretched so its brightest pixel is 255, and pasted at the whole-pixel offset that puts its
    centre of mass nearest (14, 14).

    Args:
        ink: PIL image, mode ``L``, ink bright on a 0 background (from :func:`normalise_ink`).

    Returns:
        uint8 tensor (28, 28): the ink box at most 20x20 px (longest side 20), brightest pixel
        255, centre of mass within 0.5 px of (14, 14) in pixel-index coordinates unless the box
        had to be clamped at the frame's edge.
    """
    mass = ink.crop(ink.getbbox()).convert("F")  # getbbox: every non-zero pixel, specks included
    width, height = mass.size
    top, bottom = _ink_span(mass.resize((1, height), Image.Resampling.BOX))
    left, right = _ink_span(mass.resize((width, 1), Image.Resampling.BOX))
    crop_height, crop_width = bottom - top + 1, right - left + 1
    scale = BOX_SIDE / max(crop_height, crop_width)
    rows, cols = max(1, round(crop_height * scale)), max(1, round(crop_width * scale))
    crop = mass.crop((left, top, right + 1, bottom + 1)).resize((cols, rows), Image.Resampling.BILINEAR)
    box = _float_pixels(crop).clamp(min=0.0)
    box = box * (255.0 / float(box.max().clamp(min=1e-6)))
    total = box.sum()
    com_row = float((box.sum(1) * torch.arange(rows)).sum() / total)
    com_col = float((box.sum(0) * torch.arange(cols)).sum() / total)
    row0 = min(max(round(CENTRE - com_row), 0), FRAME_SIDE - rows)
    col0 = min(max(round(CENTRE - com_col), 0), FRAME_SIDE - cols)
    frame = torch.zeros(FRAME_SIDE, FRAME_SIDE, dtype=torch.uint8)
    frame[row0 : row0 + rows, col0 : col0 + cols] = box.round().to(torch.uint8)
    return frame


def preprocess_image_uint8(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """A picture of one digit -> MNIST-style uint8 pixels (white ink on black, 20x20 box, centred mass).

    Args:
        source: a file path, the file's bytes, a binary file object, or a PIL image.
        max_pixels: the largest ``width * height`` accepted before decoding.

    Returns:
        uint8 tensor (1, 28, 28), values 0-255, the layout of the MNIST IDX images.

    Raises:
        ImageTooLargeError, ImageError, NoDigitFoundError: see :func:`open_image` and
            :func:`normalise_ink`; every message is one line starting with the file's name.
    """
    name = source_name(source)
    image = open_image(source, max_pixels)
    try:
        gray = to_grayscale(image)
    except Exception as err:  # an unusual mode or inconsistent metadata (e.g. a 16-bit transparency key)
        raise ImageError(f"{name}: cannot convert its {image.mode} pixels to grayscale ({one_line(err)})") from None
    return fit_to_mnist_frame(normalise_ink(gray, name)).unsqueeze(0)
