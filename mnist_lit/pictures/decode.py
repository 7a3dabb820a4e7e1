"""Any picture file -> a decoded, upright, 8-bit grayscale PIL image, within a pixel limit.

A photo or drawing arrives as JPEG or PNG (or BMP, GIF, TIFF, WebP, PNM), any size, sometimes 16-bit or
with transparency, sometimes stored rotated with an EXIF orientation tag. :func:`open_image` refuses a
picture whose header claims more than ``max_pixels`` before any pixel is decoded, decodes it (JPEGs already
reduced in the decoder) and applies the EXIF orientation; :func:`to_grayscale` turns any mode into 8-bit
``L`` (16/32-bit and float pixels rescaled, transparency composited onto white, ITU-R 601 luma), shrunk to
at most :data:`WORK_SIDE` px; :func:`load_gray` does both for the photo reader (as a NumPy array, a transparent
picture's alpha channel taken as the ink when compositing leaves no contrast), reducing no further than the
analysis size (:mod:`mnist_lit.pictures.worksize`: a long, thin picture keeps its shorter side). Pillow (and NumPy
for the array); every error is one line starting with the picture's name.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image, ImageOps

from mnist_lit.errors import ImageError, ImageTooLargeError
from mnist_lit.pictures.worksize import work_factor

#: Pictures with more pixels than this (width x height, read from the header) are refused before
#: decoding: 64 megapixels, above 48 MP phone photos (the memory this allows: docs/troubleshooting.md).
MAX_IMAGE_PIXELS = 64_000_000
#: Pictures are shrunk (area averaging) so that their longest side is at most this many pixels
#: before the ink is analysed: enough for a digit filling 1/10 of the picture to keep ~100 px.
WORK_SIDE = 1024
#: Transparent pictures keeping under this darkness (0-255) where opaque, composited onto white, have alpha ink.
ALPHA_INK_CONTRAST = 40
#: The Pillow formats read (those of :data:`mnist_lit.pictures.dataset.IMAGE_SUFFIXES`; Pillow's JPEG opener also
#: gives a phone's MPO, a JPEG with a second picture). Pillow opens each of them from its header alone, so the
#: pixel limit is checked before any pixel is decoded; some others decode while opening (ICO: a 560 kB file held
#: a 12000x12000 picture).
PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

ImageSource = str | Path | bytes | BinaryIO | Image.Image


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Pillow's may hold several), or its type's name."""
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
    image = _checked_header(source, name, max_pixels)
    return _decoded(image, name, (WORK_SIDE, WORK_SIDE))


def _checked_header(source: ImageSource, name: str, max_pixels: int) -> Image.Image:
    """The picture opened (header read, no pixel decoded; a PIL image as is) and its size checked against
    ``max_pixels`` (:class:`ImageTooLargeError`) and for zero sides (:class:`ImageError`)."""
    image = source if isinstance(source, Image.Image) else _open_header(source, name, max_pixels)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the header claims {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,}; not decoded, shrink the picture first"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: the image is {width}x{height} pixels, nothing to read")
    return image


def header_pixels(data: bytes) -> int | None:
    """Width x height the header of a picture in one of :data:`PICTURE_FORMATS` claims, nothing decoded (what
    :func:`open_image` checks against its limit first); None for bytes that are no such picture."""
    try:
        with _open_header(data, "<image>", MAX_IMAGE_PIXELS) as image:
            return image.width * image.height
    except ImageError:  # hostile, damaged or another format; open_image gives the one-line reason
        return None


def _decoded(image: Image.Image, name: str, draft: tuple[int, int]) -> Image.Image:
    """``image`` decoded and turned upright (EXIF orientation, in place); a JPEG decoded in grayscale and reduced in
    the decoder by the largest of 1/2, 1/4, 1/8 that keeps its width and height at least ``draft`` (w, h)."""
    try:
        if image.format in ("JPEG", "MPO"):
            image.draft("L", draft)  # DCT-domain downscale, only by powers of two
        ImageOps.exif_transpose(image, in_place=True)  # loads (decodes) the pixels
    except Exception as err:
        raise ImageError(f"{name}: damaged or truncated image data ({one_line(err)})") from None
    return image


def _open_header(source: str | Path | bytes | BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """``Image.open`` of one of :data:`PICTURE_FORMATS`: the header read, no pixel decoded; every failure (another
    format included) as one :class:`ImageError` line."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        return Image.open(source, formats=PICTURE_FORMATS)
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
            f"{name}: not a readable image ({one_line(err)}); use a PNG, JPEG, BMP, GIF, TIFF or WebP file"
        ) from None


def to_grayscale(image: Image.Image, box: tuple[int, int] = (WORK_SIDE, WORK_SIDE)) -> Image.Image:
    """Any Pillow mode -> 8-bit grayscale (mode ``L``), transparency composited onto white.

    16-bit (``I;16*``) pixels are divided by 257 (65535 -> 255); other ``I``/``F`` images are
    kept if they lie within 0-255 and otherwise stretched from their minimum to their maximum.
    Colour uses Pillow's ITU-R 601 luma (``L = 0.299 R + 0.587 G + 0.114 B``). Pictures larger
    than ``box`` are shrunk by area averaging to fit in it, keeping the aspect ratio.

    Args:
        image: a loaded PIL image in any mode (``1``, ``L``, ``LA``, ``P``, ``RGB``, ``RGBA``,
            ``CMYK``, ``I;16``, ``I``, ``F``, ...).
        box: (width, height), px, the picture is shrunk to fit in (default ``WORK_SIDE`` both ways; the photo
            reader's :func:`load_gray` keeps a long, thin picture's shorter side: :func:`_reduced_box`).

    Returns:
        a PIL image in mode ``L``.
    """
    if image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    elif image.mode in ("I", "F"):
        low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
        if low < 0 or high > 255:
            scale = 255 / (high - low) if high > low else 0.0
            image = image.point(lambda v: (v - low) * scale + 0.5)
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    if image.mode != "L":
        image = image.convert("L")
    if image.width > box[0] or image.height > box[1]:
        image = image.copy()
        image.thumbnail(box, Image.Resampling.BOX)
    return image


def upright_size(source: ImageSource, image: Image.Image) -> tuple[int, int]:
    """(width, height) of the picture as the user sees it: JPEGs come out of :func:`open_image` reduced in the
    decoder, so their size is read again from the header (no pixels decoded), turned by the EXIF orientation."""
    if image.format not in ("JPEG", "MPO") or isinstance(source, Image.Image):
        return image.size
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    position = None if isinstance(handle, (str, Path)) else handle.tell()
    try:
        with Image.open(handle, formats=("JPEG",)) as header:
            width, height = header.size
            turned = header.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap width and height
    finally:
        if position is not None and not isinstance(handle, (str, Path)):
            handle.seek(position)
    return (height, width) if turned else (width, height)


def _draft_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The (w, h) to ask of Pillow's JPEG ``draft`` so that the decoder reduces a picture of ``size`` (w, h) as far
    as it stays at least its analysis size for a longest side of ``side`` px
    (:func:`mnist_lit.pictures.worksize.work_factor`: a long, thin picture keeps its shorter side)."""
    factor = work_factor(*size, side)
    return size if factor >= 1 else _scaled_up(size, factor)


def _reduced_box(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The (w, h) box :func:`to_grayscale` shrinks a decoded picture of ``size`` (w, h) to fit in: ``WORK_SIDE``
    both ways, grown to the picture's analysis size for a longest side of ``side`` px where that is larger (a long,
    thin picture, :func:`mnist_lit.pictures.worksize.work_factor`)."""
    width, height = _scaled_up(size, min(1.0, work_factor(*size, side)))
    return max(WORK_SIDE, width), max(WORK_SIDE, height)


def _scaled_up(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """``size`` (w, h) times ``factor``, each side rounded up, px; a product that is a whole number up to the float
    error of ``factor`` is that number (318 x (320 / 424) gives 240.00000000000003: 240)."""
    return math.ceil(size[0] * factor - 1e-9), math.ceil(size[1] * factor - 1e-9)


def _header_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened, not yet decoded picture as the user sees it: turned by its EXIF orientation."""
    turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap width and height
    return (image.height, image.width) if turned else image.size


def load_gray(source: ImageSource, max_pixels: int, side: int = WORK_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a picture into 8-bit grayscale with its ink dark or light as drawn, and the upright size.

    Transparent pictures are composited onto white; when that leaves no contrast where the picture is
    opaque (white ink on a transparent background, as drawing apps export it), the alpha channel itself is
    the ink: gray = 255 - alpha. JPEGs are decoded in grayscale, reduced in the decoder (by 1/2, 1/4 or 1/8)
    as far as their longest side stays at least ``side`` px.

    Returns:
        (gray uint8 (H, W), (width, height) of the upright picture). Large pictures come back reduced (JPEGs
        in the decoder, others to 1024 px, see :func:`mnist_lit.pictures.decode.to_grayscale`), never below their
        analysis size for a longest side of ``side`` px (:func:`mnist_lit.pictures.worksize.work_factor`: a strip
        of 12000x40 px comes back about 11084x37, not 1024x3).

    Raises:
        ImageTooLargeError, ImageError: see :func:`mnist_lit.pictures.decode.open_image`.
    """
    name = source_name(source)
    image = _checked_header(source, name, max_pixels)
    from_header = image.format in ("JPEG", "MPO") and not isinstance(source, Image.Image)
    size = _header_size(image) if from_header else None  # read before decoding reduces the image
    image = _decoded(image, name, _draft_size(image.size, side))
    size = size or image.size
    box = _reduced_box(image.size, side)
    try:
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            rgba.thumbnail(box, Image.Resampling.BOX)
            pixels = np.asarray(rgba)
            alpha = pixels[..., 3]
            white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L")
            gray = np.asarray(white)
            opaque = alpha > 127
            if opaque.any() and not opaque.all():
                contrast = np.percentile(255 - gray[opaque], 95)
                if contrast < ALPHA_INK_CONTRAST:
                    return (255 - alpha).astype(np.uint8), size
            return np.ascontiguousarray(gray), size
        return np.asarray(to_grayscale(image, box)), size
    except Exception as err:  # an unusual mode or inconsistent metadata (e.g. a 16-bit transparency key)
        raise ImageError(f"{name}: cannot convert its {image.mode} pixels to grayscale ({one_line(err)})") from None
