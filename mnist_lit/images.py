"""A user's picture of a digit -> an MNIST-style uint8 (1, 28, 28) tensor, the model's input.

MNIST's digits are white strokes on black, size-normalised so the longest side of the ink fills
a 20x20 box (anti-aliased, aspect ratio kept), then placed in a 28x28 frame so that the centre of
mass of the pixels sits at the frame's centre (LeCun, Cortes, Burges, "The MNIST database of
handwritten digits", http://yann.lecun.com/exdb/mnist/). On the 10,000 official test images the
centre of mass, in pixel-index coordinates, lies between 13.5 and 14.5 on both axes (mean 14.0),
and the longest side of the ink box is 20 px for 99.9% of them. A photo or drawing is dark ink on
light paper, any size, off-centre, JPEG or PNG, sometimes 16-bit or with transparency, sometimes
stored rotated with an EXIF orientation tag. :func:`preprocess_image_uint8` bridges the two with Pillow
and torch only; this module knows nothing about Lightning.

Pipeline (each step one function below):

1. :func:`open_image`: refuse a picture whose header claims more than ``max_pixels`` before any
   pixel is decoded, decode (JPEGs already reduced in the decoder), apply the EXIF orientation.
2. :func:`to_grayscale`: 16/32-bit and float pixels rescaled to 8 bits, transparency composited
   onto white, any mode -> 8-bit ``L`` (ITU-R 601 luma); shrunk to at most ``WORK_SIDE`` px.
3. :func:`normalise_ink`: invert when the border is light; estimate the background level and
   its noise from the border; map background and paper texture to 0 and ink to 255 with a linear
   ramp (the ramp keeps anti-aliased stroke edges, as MNIST has them).
4. :func:`fit_to_mnist_frame`: crop to the ink's bounding box (ignoring stray specks that hold
   under ``TRIM_FRACTION`` of the ink), scale the longest side to 20 px keeping the aspect ratio
   (antialiased), and paste it into 28x28 with its centre of mass at (14, 14).
"""

from __future__ import annotations

import glob
import io
import os
import re
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from mnist_lit.errors import DataError, ImageError, ImageTooLargeError, NoDigitFoundError
from mnist_lit.idx import IMAGE_SIDE

#: The longest side of the ink in the output, px (MNIST: digits normalised to a 20x20 box).
BOX_SIDE = 20
#: Where the centre of mass goes, in pixel-index coordinates (row, col) (MNIST test set: mean 14.0).
CENTRE = 14.0
#: Pictures with more pixels than this (width x height, read from the header) are refused before
#: decoding: 64 megapixels, above 48 MP phone photos. Decoding and converting an RGBA picture takes
#: up to about 13 bytes a pixel at its peak, so up to ~0.8 GB at this limit (figures: docs/troubleshooting.md).
MAX_IMAGE_PIXELS = 64_000_000
#: Pictures are shrunk (area averaging) so that their longest side is at most this many pixels
#: before the ink is analysed: enough for a digit filling 1/10 of the picture to keep ~100 px.
WORK_SIDE = 1024
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
#: File name endings taken from a folder (a single file or a glob is taken whatever its name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm")

ImageSource = str | Path | bytes | BinaryIO | Image.Image


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def source_name(source: ImageSource) -> str:
    """The name used in messages: the path, the PIL image's file name, or ``<image>``."""
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "filename", None) or getattr(source, "name", None) or "<image>"


def open_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and decode a picture, refusing oversized headers first, and apply its EXIF orientation.

    Args:
        source: a file path, the file's bytes, a binary file object, or a PIL image (used as is).
        max_pixels: the largest ``width * height`` accepted (default :data:`MAX_IMAGE_PIXELS`).

    Returns:
        a loaded PIL image, upright, in the file's own mode (JPEGs may come back reduced by a
        power of two and in mode ``L``: the decoder's cheap downscale, still >= ``WORK_SIDE``).

    Raises:
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels (nothing decoded).
        ImageError: a missing, empty, unidentifiable, truncated or otherwise damaged file.
    """
    name = source_name(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        try:
            image = Image.open(source)  # reads the header only
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except Image.DecompressionBombError as err:  # Pillow's own limit, above ours
            pixels = re.search(r"\((\d+) pixels\)", str(err))
            claimed = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
            raise ImageTooLargeError(
                f"{name}: the header claims {claimed}, more than the limit of "
                f"{max_pixels:,}; not decoded, shrink the picture first"
            ) from None
        except Exception as err:  # Pillow's format plugins raise many types on hostile input
            if isinstance(source, (str, Path)) and os.path.isfile(source) and os.path.getsize(source) == 0:
                raise ImageError(f"{name}: empty file (0 bytes), not an image") from None
            raise ImageError(
                f"{name}: not a readable image ({_one_line(err)}); use a PNG, JPEG, BMP, GIF, TIFF or WebP file"
            ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the header claims {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,}; not decoded, shrink the picture first"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: the image is {width}x{height} pixels, nothing to read")
    try:
        if image.format in ("JPEG", "MPO"):
            image.draft("L", (WORK_SIDE, WORK_SIDE))  # DCT-domain downscale, only by powers of two
        ImageOps.exif_transpose(image, in_place=True)  # loads (decodes) the pixels
    except Exception as err:
        raise ImageError(f"{name}: damaged or truncated image data ({_one_line(err)})") from None
    return image


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit grayscale (mode ``L``), transparency composited onto white.

    16-bit (``I;16*``) pixels are divided by 257 (65535 -> 255); other ``I``/``F`` images are
    kept if they lie within 0-255 and otherwise stretched from their minimum to their maximum.
    Colour uses Pillow's ITU-R 601 luma (``L = 0.299 R + 0.587 G + 0.114 B``). Pictures larger
    than ``WORK_SIDE`` are shrunk by area averaging, keeping the aspect ratio.

    Args:
        image: a loaded PIL image in any mode (``1``, ``L``, ``LA``, ``P``, ``RGB``, ``RGBA``,
            ``CMYK``, ``I;16``, ``I``, ``F``, ...).

    Returns:
        a PIL image in mode ``L``.
    """
    if image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    elif image.mode in ("I", "F"):
        low, high = image.getextrema()
        if low < 0 or high > 255:
            scale = 255 / (high - low) if high > low else 0.0
            image = image.point(lambda v: (v - low) * scale + 0.5)
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    if image.mode != "L":
        image = image.convert("L")
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    return image


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
    border = sum(torch.tensor(gray.crop(box).histogram(), dtype=torch.int64) for box in strips)
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


def _ink_span(mass: torch.Tensor) -> tuple[int, int]:
    """First and last index of a 1-D ink profile, leaving out ``TRIM_FRACTION`` of the mass at each end."""
    cumulative = mass.double().cumsum(0)
    total = float(cumulative[-1])
    first = int(torch.searchsorted(cumulative, TRIM_FRACTION * total, right=True))
    last = int(torch.searchsorted(cumulative, (1.0 - TRIM_FRACTION) * total))
    return first, max(first, min(last, len(mass) - 1))


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
    top, bottom = _ink_span(_float_pixels(mass.resize((1, height), Image.Resampling.BOX))[:, 0])
    left, right = _ink_span(_float_pixels(mass.resize((width, 1), Image.Resampling.BOX))[0])
    crop_height, crop_width = bottom - top + 1, right - left + 1
    scale = BOX_SIDE / max(crop_height, crop_width)
    rows, cols = max(1, round(crop_height * scale)), max(1, round(crop_width * scale))
    crop = mass.crop((left, top, right + 1, bottom + 1)).resize((cols, rows), Image.Resampling.BILINEAR)
    box = _float_pixels(crop).clamp(min=0.0)
    box = box * (255.0 / float(box.max().clamp(min=1e-6)))
    total = box.sum()
    com_row = float((box.sum(1) * torch.arange(rows)).sum() / total)
    com_col = float((box.sum(0) * torch.arange(cols)).sum() / total)
    row0 = min(max(round(CENTRE - com_row), 0), IMAGE_SIDE - rows)
    col0 = min(max(round(CENTRE - com_col), 0), IMAGE_SIDE - cols)
    frame = torch.zeros(IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8)
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
        raise ImageError(f"{name}: cannot convert its {image.mode} pixels to grayscale ({_one_line(err)})") from None
    return fit_to_mnist_frame(normalise_ink(gray, name)).unsqueeze(0)


def list_images(path: str | Path) -> list[str]:
    """The picture files named by ``path``: a file, a folder (its images sorted by name) or a glob.

    A folder contributes its files whose names end in one of :data:`IMAGE_SUFFIXES` (any case),
    hidden files excepted; a glob (``*``, ``?``, ``[``; ``**`` recurses) contributes every file it
    matches, sorted; a single file is taken whatever its name.

    Returns:
        file paths as strings, in the form ``path`` was given (relative stays relative).

    Raises:
        DataError: nothing matches, the folder holds no image files, or the path does not exist.
    """
    text = str(path)
    if glob.has_magic(text):
        files = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"no files match {text!r}; check the pattern (quote it so the shell leaves it alone)")
        return files
    folder = Path(text)
    if folder.is_dir():
        files = sorted(
            str(folder / p.name)
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"{text}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if folder.is_file():
        return [text]
    raise DataError(f"{text}: no such file, folder or glob; give a picture, a folder of pictures or a pattern")


class ImageFiles(Dataset):
    """Picture files as a predict set: item ``i`` is ``(pixels, file, error)``.

    ``pixels`` is uint8 (1, 28, 28) from :func:`preprocess_image_uint8` (all zeros when the file
    failed), ``error`` the one-line reason or ``""``. A file that fails never stops the others.
    :meth:`__getitems__` returns a whole batch ``(uint8 (B, 1, 28, 28), [file] * B, [error] * B)``,
    so the DataLoader needs no collate work (use :func:`mnist_lit.data.collate_batch`).

    Args:
        files: paths, e.g. from :func:`list_images`.
        max_pixels: the header size limit passed to :func:`preprocess_image_uint8`.
    """

    def __init__(self, files: list[str], max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.files, self.max_pixels = [str(f) for f in files], max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, str]:
        file = self.files[index]
        try:
            return preprocess_image_uint8(file, self.max_pixels), file, ""
        except ImageError as err:
            return torch.zeros(1, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8), file, _one_line(err)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, list[str], list[str]]:
        items = [self[i] for i in indices]
        return torch.stack([item[0] for item in items]), [item[1] for item in items], [item[2] for item in items]
