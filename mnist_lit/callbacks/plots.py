"""Pictures of a run: digit grids, a confusion matrix, learning curves.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no
display, no global state), at a fixed pixel size, so the same picture can be written as a
PNG file and logged to TensorBoard from one rendering (:func:`figure_to_array`, :func:`save_png`).
Digit grids, drawn every epoch, are composed with Pillow directly (:func:`digit_grid`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from mnist_lit.atomic import atomic_write

DPI = 100  # pixels per inch of every figure; sizes below are in pixels
DIGIT_CELL_PX = (100, 120)  # (width, height) of one digit and its caption in a grid
CONFUSION_MATRIX_PX = (640, 640)
LEARNING_CURVES_PX = (1000, 400)
RIGHT, WRONG = "tab:green", "tab:red"  # caption colours in digit grids
NOT_DRAWN = ": not a number, not drawn"  # legend of a learning curve (or test line) without a finite value


def _figure(size_px: tuple[int, int]) -> Figure:
    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def grid_size_px(num_images: int, ncols: int = 8) -> tuple[int, int]:
    """(width, height) in pixels of :func:`digit_grid` for ``num_images`` digits in ``ncols`` columns."""
    ncols = min(ncols, num_images)
    return ncols * DIGIT_CELL_PX[0], math.ceil(num_images / ncols) * DIGIT_CELL_PX[1]


def digit_grid(images: torch.Tensor, captions: Sequence[str], colors: Sequence[str], ncols: int = 8) -> np.ndarray:
    """Digits in a grid, each with a caption above it, drawn with Pillow.

    Pillow rather than a matplotlib figure because callbacks draw one every validation epoch and Pillow's
    text is far cheaper than matplotlib's (docs/performance.md), in the same font (DejaVu Sans, which
    matplotlib ships) and colours.

    Args:
        images: (N, 1, 28, 28) or (N, 28, 28), any dtype and pixel scale (each digit is shown
            with its own grey range, ink dark on white, each pixel as a square of whole pixels).
        captions: N strings, e.g. ``"pred 7 / true 7"``.
        colors: N matplotlib colours for the captions (:data:`RIGHT`, :data:`WRONG`), drawn opaque
            (an alpha in the colour is ignored).
        ncols: digits per row.

    Returns:
        uint8 (H, W, 3) RGB pixels, (W, H) = :func:`grid_size_px` (a new, writable array).

    Raises:
        ValueError: if there are no images or the three lengths differ.
    """
    if len(images) == 0 or not len(images) == len(captions) == len(colors):
        raise ValueError(
            f"digit_grid needs N >= 1 images with N captions and colours, "
            f"got {len(images)}, {len(captions)}, {len(colors)}"
        )
    pixels = images.detach().float().cpu().reshape(len(images), 28, 28).numpy()
    width, height = grid_size_px(len(images), ncols)
    ncols = min(ncols, len(images))
    cell_w, cell_h = DIGIT_CELL_PX
    scale = (min(cell_w, cell_h - 24) - 8) // 28  # whole pixels per digit pixel, leaving room for the caption
    side = 28 * scale
    low = pixels.min(axis=(1, 2), keepdims=True)
    ink = (pixels - low) / np.maximum(pixels.max(axis=(1, 2), keepdims=True) - low, 1e-12)  # each digit in [0, 1]
    # Tiled here rather than by torchvision.utils.make_grid: each cell needs room for its caption above the
    # digit, and make_grid pads every side alike.
    canvas = np.full((height, width), 255, dtype=np.uint8)  # white
    corners = [((i % ncols) * cell_w + (cell_w - side) // 2, (i // ncols) * cell_h + 20) for i in range(len(ink))]
    for digit, (x0, y0) in zip(ink, corners, strict=False):
        grey = np.round(255 * (1 - digit)).astype(np.uint8)  # ink dark
        canvas[y0 : y0 + side, x0 : x0 + side] = grey.repeat(scale, axis=0).repeat(scale, axis=1)
    picture = Image.fromarray(canvas).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for (x0, y0), caption, color in zip(corners, captions, colors, strict=False):
        fill = tuple(round(255 * c) for c in to_rgb(color))
        draw.text((x0 + side / 2, y0 - 4), caption, fill=fill, font=_caption_font(), anchor="md")
    return np.array(picture)


@functools.cache
def _caption_font() -> ImageFont.FreeTypeFont:
    """DejaVu Sans at 11 pixels: matplotlib's font and its size 8 points at :data:`DPI`."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), round(8 * DPI / 72))


def confusion_matrix_figure(matrix: torch.Tensor | np.ndarray, title: str, fig: Figure | None = None) -> Figure:
    """A confusion matrix as a heat map with the count in every cell.

    Args:
        matrix: (C, C) integer counts, rows = true class, columns = predicted class
            (torchmetrics' ``MulticlassConfusionMatrix`` layout).
        title: first line of the title; the accuracy (trace / total) and the total are added.
        fig: a figure this function returned before, redrawn with the new counts and title (the
            same picture as a new figure, in about half the time: callbacks draw one every epoch);
            a new figure is made if it is None or was made for another number of classes.

    Returns:
        A figure of :data:`CONFUSION_MATRIX_PX` pixels.
    """
    counts = np.asarray(matrix.cpu() if torch.is_tensor(matrix) else matrix, dtype=np.int64)
    if fig is None or len(fig.axes[0].texts) != counts.size:
        fig = _figure(CONFUSION_MATRIX_PX)
        ax = fig.add_axes((0.12, 0.09, 0.84, 0.80))  # fixed margins for the labels and the two-line title
        ax.imshow(counts, cmap="Blues")
        for row, col in np.ndindex(counts.shape):
            ax.text(col, row, "", ha="center", va="center", fontsize=7)
        ticks = range(len(counts))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
    ax = fig.axes[0]
    ax.images[0].set_data(counts)
    ax.images[0].set_clim(counts.min(), counts.max())  # as a new imshow scales its colours
    threshold = counts.max() / 2
    for text, count in zip(ax.texts, counts.flat, strict=False):
        text.set_text(str(count))
        text.set_color("white" if count > threshold else "black")
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set_title(f"{title}\naccuracy {accuracy:.4f} on {total:,} images")
    return fig


def learning_curves_figure(epochs: Sequence[dict], test: dict | None = None) -> Figure:
    """Loss and accuracy per epoch, training against validation, one panel each.

    Args:
        epochs: one dict per epoch with ``epoch`` (0-based) and any of ``train_loss``, ``val_loss``,
            ``train_acc``, ``val_acc`` (the records of ``metrics.json``).
        test: optional dict with ``test_loss`` / ``test_acc``, drawn as dashed horizontal lines.

    A value that is ``None`` (``null`` in metrics.json: the metric was NaN or infinite, as in a run that diverged)
    or not finite is a gap in its curve; a curve or test value with no finite value at all is not drawn, and its
    legend entry says so.

    Returns:
        A figure of :data:`LEARNING_CURVES_PX` pixels (epochs numbered from 1, as Keras prints them).
    """
    fig = _figure(LEARNING_CURVES_PX)
    for ax, name in zip(fig.subplots(1, 2), ("loss", "acc"), strict=False):
        drawn = False  # any finite point in this panel
        for stage, style in (("train", "o-"), ("val", "s-")):
            key = f"{stage}_{name}"
            points = [(r["epoch"] + 1, _finite(r[key])) for r in epochs if key in r]
            if points:
                finite = any(not math.isnan(value) for _, value in points)
                ax.plot(*zip(*points, strict=False), style, label=key if finite else f"{key}{NOT_DRAWN}")
                drawn |= finite
        if test and f"test_{name}" in test:
            value = _finite(test[f"test_{name}"])
            if not math.isnan(value):
                ax.axhline(value, color="tab:gray", linestyle="--", label=f"test_{name}")
            else:
                ax.plot([], [], color="tab:gray", linestyle="--", label=f"test_{name}{NOT_DRAWN}")
        if epochs and not drawn:  # matplotlib scales to finite points only: the epochs' range, none being finite
            ax.set_xlim(0.5, max(r["epoch"] for r in epochs) + 1.5)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("loss (cross-entropy)" if name == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    return fig


def _finite(value: float | None) -> float:
    """``value`` when it is a finite number, else NaN (``None``: metrics.json's null for a NaN or infinite metric)."""
    return value if value is not None and math.isfinite(value) else math.nan


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig``: uint8 (H, W, 3) RGB pixels, for ``SummaryWriter.add_image(..., dataformats="HWC")``."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]  # the Agg canvas's


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write uint8 (H, W, 3) RGB ``pixels`` (from :func:`figure_to_array`) as a PNG at ``path``,
    atomically (:func:`mnist_lit.atomic.atomic_write`); returns the path."""
    with atomic_write(path) as handle:
        Image.fromarray(pixels).save(handle, format="PNG")
    return Path(path)
