"""A PNG contact sheet of picture predictions: each input with the digits' boxes, what the network saw, and its answer.

The tutorial's ``plt.imshow(X_test[0])`` step for a user's own pictures. Built on
:class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from PIL import Image
from torchvision.utils import make_grid

from mnist_lit.atomic import atomic_write
from mnist_lit.pictures.decode import open_image, to_grayscale, upright_size

#: At most this many pictures go on one sheet (the first ones, in the CSV's order).
SHEET_MAX_IMAGES = 100
PAIRS_PER_ROW = 4  # picture + preprocessed version = one pair
CELL_INCHES = (1.3, 1.55)  # (width, height) of one panel, title included
DPI = 100
DISPLAY_SIDE = 256  # pictures are shown shrunk to at most this many pixels

#: One picture of the sheet: ``(file, digits, confidence, error, crops, quads)``, see :func:`render_sheet`.
SheetEntry = tuple[str, str, float | None, str, torch.Tensor, np.ndarray]


def _display_image(file: str) -> tuple[Image.Image, float] | None:
    """The picture as a person sees it (upright, transparency on white, RGB, at most DISPLAY_SIDE px) and the
    factor from the picture's pixels to the shown ones."""
    try:
        image = open_image(file)
        full_width = upright_size(file, image)[0]
        if image.mode.startswith("I") or image.mode == "F":
            image = to_grayscale(image)
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA")).convert("RGB")
    except Exception:  # shown as an empty panel; the error itself is in the CSV and on stderr
        return None
    image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    return image, image.width / full_width


def render_sheet(entries: Sequence[SheetEntry], path: str | Path) -> Path:
    """Render up to :data:`SHEET_MAX_IMAGES` predictions as a PNG sheet, written atomically.

    Each entry gets two panels: the picture (titled with its file name) with the box of every digit found and
    the digit read in it, and the 28x28 crops side by side, white ink on black as the network sees them
    (titled with the number read and its confidence, or the error when the file failed or holds no digit).
    Boxes and crops are the ones the prediction ran on (:class:`mnist_lit.pictures.PictureFiles` batches): the
    picture is not read again, only decoded once more for display.

    Args:
        entries: ``(file, digits, confidence, error, crops, quads)`` per picture; ``digits`` is ``""`` and
            ``error`` a one-line message when the file failed, else ``error == ""``; ``crops`` uint8
            (K, 1, 28, 28) white ink on black, ``quads`` float32 (K, 4, 2) each digit's box corners (x, y) in
            the upright picture's pixels, as :func:`mnist_lit.pictures.read_picture` returns them (K = 0
            when the file failed or holds no digit).
        path: the PNG file to write (its folder is created).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``entries`` is empty.
    """
    entries = list(entries)[:SHEET_MAX_IMAGES]
    if not entries:
        raise ValueError("render_sheet needs at least one prediction")
    pairs = min(PAIRS_PER_ROW, len(entries))
    rows = math.ceil(len(entries) / pairs)
    fig = Figure(figsize=(2 * pairs * CELL_INCHES[0], rows * CELL_INCHES[1]), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2 * pairs, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (file, digits, confidence, error, crops, quads) in enumerate(entries):
        picture_ax, digit_ax = axes[i // pairs, 2 * (i % pairs)], axes[i // pairs, 2 * (i % pairs) + 1]
        name = Path(file).name
        picture_ax.set_title(name if len(name) <= 18 else name[:8] + "..." + name[-7:], fontsize=7)
        shown = _display_image(file)
        if shown is not None:
            picture_ax.imshow(shown[0])
        if error:
            _draw_error(digit_ax, error)
        else:
            reading = (digits, float("nan") if confidence is None else confidence)
            _draw_reading(picture_ax, digit_ax, shown, reading, crops, quads)
    fig.tight_layout(pad=0.3)
    with atomic_write(path, replace=False) as handle:  # a sheet never replaces a file (FileExistsError)
        fig.savefig(handle, format="png")
    return Path(path)


def _draw_error(ax, error: str) -> None:
    """The error's reason (messages start with the file's name), wrapped, in red, titled "error"."""
    reason = error.split(": ", 1)[-1]
    text = "\n".join(textwrap.wrap(reason, 22)[:4])
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=5, color="tab:red", transform=ax.transAxes)
    ax.set_title("error", fontsize=8, color="tab:red")


def _draw_reading(
    picture_ax, digit_ax, shown, reading: tuple[str, float], crops: torch.Tensor, quads: np.ndarray
) -> None:
    """Boxes (``quads`` float32 (K, 4, 2) in the picture's pixels, scaled to the shown picture) and digits over the
    picture, and the uint8 (K, 1, 28, 28) ``crops`` side by side (white on black) with ``reading``: the number
    read and its confidence."""
    digits, confidence = reading
    if shown is not None:
        for quad, digit in zip(quads * shown[1], digits, strict=False):
            picture_ax.add_patch(Polygon(quad, closed=True, fill=False, edgecolor="tab:orange", linewidth=0.8))
            picture_ax.text(
                quad[0, 0], quad[0, 1], digit, color="tab:orange", fontsize=6, fontweight="bold", va="bottom"
            )
    crops = crops if len(crops) else torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    strip = make_grid(crops, nrow=len(crops), padding=0)[0]  # (28, 28 * n) uint8
    digit_ax.imshow(strip.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    digit_ax.set_title(f"{digits} ({100 * confidence:.2f}%)", fontsize=8, fontweight="bold")
