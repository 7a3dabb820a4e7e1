"""Build user-style pictures from real MNIST digits: the inputs of tests/test_images.py and the image benchmark.

Each builder takes one real digit (uint8 (28, 28), white on black, as in the IDX file) and a seeded
``torch.Generator`` and writes one file the way people make them: a photo of ink on paper, a
drawing with a transparent background, a phone JPEG stored rotated, a 16-bit scan.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

#: The picture kinds of the acceptance test: name -> (builder, file suffix).
KINDS = ("paper_jpeg", "rgba_transparent", "exif_rotated_jpeg", "gray16_png")


def _ink(digit: torch.Tensor, factor: int) -> torch.Tensor:
    """The digit enlarged ``factor`` times (bicubic), as ink coverage float32 (28f, 28f) in [0, 1]."""
    big = F.interpolate(digit.float()[None, None] / 255.0, scale_factor=factor, mode="bicubic", align_corners=False)
    return big[0, 0].clamp(0.0, 1.0)


def _paper(
    height: int,
    width: int,
    colour: tuple[float, ...],
    generator: torch.Generator,
    noise: float = 6.0,
    shading: float = 25.0,
) -> torch.Tensor:
    """Paper float32 (C, H, W) in 0-255: a colour, a light fall-off across the sheet and grain noise."""
    ramp = torch.linspace(0.0, 1.0, width).expand(height, width) * 0.6 + torch.linspace(0.0, 1.0, height)[:, None] * 0.4
    paper = torch.tensor(colour, dtype=torch.float32)[:, None, None] - shading * ramp
    return paper + noise * torch.randn(len(colour), height, width, generator=generator)


def _on_paper(
    digit: torch.Tensor,
    generator: torch.Generator,
    canvas: tuple[int, int],
    factor: int,
    paper_colour: tuple[float, ...],
    ink_colour: tuple[float, ...],
) -> torch.Tensor:
    """Ink on paper, the digit at a random off-centre place; float32 (C, H, W) in 0-255."""
    height, width = canvas
    sheet = _paper(height, width, paper_colour, generator)
    coverage = _ink(digit, factor)
    side = coverage.shape[0]
    top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
    ink = torch.tensor(ink_colour, dtype=torch.float32)[:, None, None]
    window = sheet[:, top : top + side, left : left + side]
    sheet[:, top : top + side, left : left + side] = window * (1 - coverage) + ink * coverage
    return sheet.clamp(0, 255)


def _to_pil(chw: torch.Tensor) -> Image.Image:
    array = chw.round().to(torch.uint8).permute(1, 2, 0).contiguous()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    height, width = array.shape[:2]
    return Image.frombytes(
        mode, (width, height), array.squeeze(2).numpy().tobytes() if mode == "L" else array.numpy().tobytes()
    )


def paper_jpeg(digit: torch.Tensor, path: Path, generator: torch.Generator) -> Path:
    """Dark blue-black ink on warm light paper, 480x360 colour canvas, digit 140 px, off-centre, JPEG q85."""
    sheet = _on_paper(digit, generator, (360, 480), 5, (226, 218, 204), (35, 38, 62))
    _to_pil(sheet).save(path, "JPEG", quality=85)
    return path


def rgba_transparent(digit: torch.Tensor, path: Path, generator: torch.Generator) -> Path:
    """A drawing-app export: blue ink whose alpha is the stroke, fully transparent black background, 200x200 PNG."""
    coverage = _ink(digit, 4)
    canvas = torch.zeros(4, 200, 200)
    side = coverage.shape[0]
    top, left = (int(v) for v in torch.randint(0, 200 - side + 1, (2,), generator=generator))
    canvas[0, top : top + side, left : left + side] = 20.0
    canvas[1, top : top + side, left : left + side] = 40.0
    canvas[2, top : top + side, left : left + side] = 140.0
    canvas[3, top : top + side, left : left + side] = 255.0 * coverage
    _to_pil(canvas).save(path, "PNG")
    return path


def exif_rotated_jpeg(digit: torch.Tensor, path: Path, generator: torch.Generator) -> Path:
    """A portrait phone photo (360x480 upright) stored as 480x360 landscape pixels with EXIF orientation 6.

    Orientation 6 means "rotate 90 degrees clockwise to display"; the stored pixels are the upright
    picture turned 90 degrees counter-clockwise, so ``ImageOps.exif_transpose`` restores it.
    """
    upright = _to_pil(_on_paper(digit, generator, (480, 360), 5, (210, 210, 212), (25, 25, 25)))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    stored.save(path, "JPEG", quality=85, exif=exif)
    return path


def gray16_png(digit: torch.Tensor, path: Path, generator: torch.Generator) -> Path:
    """A 16-bit grayscale scan: dark ink on light paper (levels 0-65535), 150x150, digit 84 px, PNG."""
    sheet = _on_paper(digit, generator, (150, 150), 3, (205.0,), (25.0,)) * 257.0
    pixels = sheet[0].round().clamp(0, 65535).to(torch.int32).numpy().astype("<u2")
    Image.frombytes("I;16", (150, 150), pixels.tobytes()).save(path, "PNG")
    return path


BUILDERS = {
    "paper_jpeg": (paper_jpeg, ".jpg"),
    "rgba_transparent": (rgba_transparent, ".png"),
    "exif_rotated_jpeg": (exif_rotated_jpeg, ".jpg"),
    "gray16_png": (gray16_png, ".png"),
}


def write_pictures(digits: torch.Tensor, folder: Path, kind: str, seed: int = 0) -> list[Path]:
    """Write one picture of ``kind`` per digit (uint8 (N, 1, 28, 28) or (N, 28, 28)) into ``folder``.

    Returns:
        the file paths in digit order, named ``{kind}_{i:05d}{suffix}`` (so name order is digit order).
    """
    builder, suffix = BUILDERS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    return [
        builder(digit.reshape(28, 28), folder / f"{kind}_{i:05d}{suffix}", generator) for i, digit in enumerate(digits)
    ]


@torch.no_grad()
def predict_files(model: torch.nn.Module, files: list[Path]) -> torch.Tensor:
    """Probabilities float32 (N, 10) of ``model`` (an :class:`mnist_lit.model.MNISTClassifier`) on pictures of one
    digit each, through :func:`mnist_lit.pictures.read_picture` (the road of ``predict --data.predict_path``); a
    picture where it does not find exactly one digit gets all-zero probabilities (counted wrong)."""
    from mnist_lit.pictures import read_picture

    out = torch.zeros(len(files), 10)
    for i, file in enumerate(files):
        crops = read_picture(file).pixels
        if len(crops) == 1:
            out[i] = model.probabilities(crops)[0]
    return out


@torch.no_grad()
def accuracy_by_kind(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, folder: Path, kinds: tuple[str, ...] = KINDS
) -> dict[str, float]:
    """Accuracy of ``model`` (eval mode) on the untouched digits and on each kind of picture made from them.

    Args:
        images: uint8 (N, 1, 28, 28) real MNIST digits; labels: int64 (N,).
        folder: where the pictures are written (one sub-folder per kind).

    Returns:
        ``{"originals": acc, kind: acc, ...}``, accuracies in [0, 1].
    """
    result = {"originals": (model(images).argmax(1) == labels).float().mean().item()}
    for kind in kinds:
        files = write_pictures(images, folder / kind, kind)
        result[kind] = (predict_files(model, files).argmax(1) == labels).float().mean().item()
    return result
