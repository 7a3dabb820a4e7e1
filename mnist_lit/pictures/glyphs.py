"""Training pictures for the "digit or not" check (:mod:`mnist_lit.pictures.digitness`): printed letters and digits
rendered with the system's TrueType fonts, and MNIST digits, all brought to the crops the picture reader makes.

Every sample goes the same road as a mark in a photo: a coverage image (float32 in [0, 1], ink 1) at photo size,
a random slant, small rotation, stroke width and blur, its ink stretched so the :data:`INK_LEVEL_PERCENTILE` of
its ink is full white (as :func:`mnist_lit.pictures.read.digit_crop` does), then
:func:`mnist_lit.pictures.frame.fit_to_mnist_frame`. Letters and digits share fonts and road, so what tells them
apart is the shape, not the print. Pillow's built-in font (``ImageFont.load_default``) is never used: the test
pictures of tests/photos.py draw their letters with it, so the measurement stays a cross-font one.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mnist_lit.pictures.frame import fit_to_mnist_frame

#: The fonts rendered: DejaVu and Liberation (Debian's fonts-dejavu-core/-extra and fonts-liberation).
FONT_GLOBS = ("/usr/share/fonts/truetype/dejavu/*.ttf", "/usr/share/fonts/truetype/liberation/*.ttf")
#: Letters that are not digits in any handwriting. Left out: O o D Q (a 0, Q a 0 with a tail), I l i (a 1),
#: S s (a 5), Z z (a 2), B (an 8), G b (a 6), g q (a 9), and C c (an unclosed 0, a 6 without its loop).
LETTERS = "AEFHJKLMNPRTUVWXYadefhjkmnprtuvwxy"
DIGITS = "0123456789"
#: As in :mod:`mnist_lit.pictures.read`: the ink level a crop is stretched to.
INK_LEVEL_PERCENTILE = 85


def font_files(globs: tuple[str, ...] = FONT_GLOBS) -> list[Path]:
    """The TrueType files found, sorted (the order the seeded sampling depends on); [] when none is installed."""
    return sorted(path for pattern in globs for path in Path("/").glob(pattern.lstrip("/")))


def render_text(text: str, font: Path, height: int, stroke: int) -> np.ndarray:
    """``text`` in ``font`` at ``height`` px (Pillow's FreeType), thickened by ``stroke`` px, as coverage float32
    (H, W) in [0, 1] with a 4-px margin; all zeros when the font has no ink for it."""
    face = ImageFont.truetype(str(font), height)
    left, top, right, bottom = (int(v) for v in face.getbbox(text, stroke_width=stroke))
    image = Image.new("L", (max(1, right - left) + 8, max(1, bottom - top) + 8), 0)
    ImageDraw.Draw(image).text((4 - left, 4 - top), text, fill=255, font=face, stroke_width=stroke, stroke_fill=255)
    return np.asarray(image, np.float32) / 255.0


def upscale_digit(digit: np.ndarray, height: int) -> np.ndarray:
    """An MNIST digit uint8 (28, 28) as coverage float32 at about ``height`` px for its 20-px box (bicubic)."""
    side = max(28, round(28 * height / 20))
    return np.clip(cv2.resize(digit.astype(np.float32) / 255.0, (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)


def distort(coverage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random slant (shear up to 0.3), rotation (up to 12 degrees), stroke change (erode or dilate by a few px
    at photo size) and Gaussian blur, as a hand and a phone camera add them."""
    height, width = coverage.shape
    pad = max(height, width) // 3 + 4
    coverage = np.pad(coverage, pad)
    centre = (coverage.shape[1] / 2, coverage.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-12, 12), 1.0)
    shear = np.array([[1, rng.uniform(-0.3, 0.3), 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    shear[0, 2] = -shear[0, 1] * centre[1]
    matrix = matrix @ shear
    coverage = cv2.warpAffine(coverage, matrix, (coverage.shape[1], coverage.shape[0]), flags=cv2.INTER_LINEAR)
    change = int(rng.integers(-1, 3)) * max(1, height // 40)
    if change:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(change) + 1, 2 * abs(change) + 1))
        thinner = cv2.erode(coverage, kernel) if change < 0 else None
        coverage = thinner if thinner is not None and thinner.max() > 0.5 else cv2.dilate(coverage, kernel)
    sigma = rng.uniform(0.0, height / 30)
    return cv2.GaussianBlur(coverage, (0, 0), sigma) if sigma > 0.3 else coverage


def to_crop(coverage: np.ndarray) -> torch.Tensor | None:
    """Coverage -> the reader's uint8 (28, 28) crop: ink stretched to its :data:`INK_LEVEL_PERCENTILE` level,
    fitted by :func:`fit_to_mnist_frame`; None when there is (almost) no ink."""
    ink = coverage > 0.25
    if int(ink.sum()) < 8:
        return None
    level = max(float(np.percentile(coverage[ink], INK_LEVEL_PERCENTILE)), 0.3)
    values = np.clip((coverage - 0.1) / (level - 0.1), 0.0, 1.0)
    return fit_to_mnist_frame(Image.fromarray(np.round(values * 255).astype(np.uint8), "L"))


def _glyph_crop(text: str, fonts: list[Path], rng: np.random.Generator) -> torch.Tensor | None:
    height = int(rng.integers(30, 110))
    font = fonts[int(rng.integers(len(fonts)))]
    coverage = render_text(text, font, height, int(rng.integers(0, max(1, height // 18) + 1)))
    return to_crop(distort(coverage, rng))


def glyph_crops(
    alphabet: str, count: int, fonts: list[Path], rng: np.random.Generator, pairs: float = 0.0
) -> torch.Tensor:
    """``count`` crops uint8 (count, 28, 28) of random characters of ``alphabet`` in random ``fonts``; a fraction
    ``pairs`` of them are two characters side by side (letters that touch in a word are cut out as one mark)."""
    crops: list[torch.Tensor] = []
    while len(crops) < count:
        text = "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=1 + int(rng.random() < pairs)))
        crop = _glyph_crop(text, fonts, rng)
        if crop is not None:
            crops.append(crop)
    return torch.stack(crops) if crops else torch.zeros(0, 28, 28, dtype=torch.uint8)


def mnist_crops(digits: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Each MNIST digit uint8 (N, 28, 28) taken to photo size, distorted as the glyphs are and cut out again:
    uint8 (N, 28, 28) (a digit whose ink vanishes is kept as it was)."""
    crops = []
    for digit in digits:
        crop = to_crop(distort(upscale_digit(digit, int(rng.integers(30, 110))), rng))
        crops.append(crop if crop is not None else torch.from_numpy(digit.copy()))
    return torch.stack(crops)
