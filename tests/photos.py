"""Realistic phone photos made from real MNIST test digits: the inputs of tests/test_pictures.py and the benchmarks.

Each kind imitates how people photograph a handwritten digit: a sheet of paper on a darker, textured table,
lit unevenly or crossed by a hard shadow, taken at an angle, slightly out of focus and saved as a JPEG, on
ruled or squared paper, in light pencil or coloured ballpoint; a drawing app's PNG of white ink on a
transparent background; a whole number of 3 to 5 real test digits side by side; and pictures with no digit
at all (landscape-like scenes, letters and words, blank sheets, doodles, noise).

Everything is drawn with NumPy and OpenCV from one ``numpy.random.Generator`` per picture, seeded from
``(seed, kind, index)``, so a picture does not change when other kinds or counts change. The ink of a digit is
the MNIST digit itself (uint8 (28, 28), white on black, as in the IDX file) enlarged with bicubic interpolation:
the strokes are real handwriting, only the paper, light and camera are simulated.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Single-digit kinds: name -> one line on what it shows (docs/pictures.md's table uses these lines).
DIGIT_KINDS = {
    "table_paper": "paper on a darker wooden or cloth table, lit unevenly",
    "shadow": "a hard shadow across the paper and a strong lighting gradient",
    "tilted": "taken 10-25 deg off vertical, table showing, mild blur, JPEG quality 55-75",
    "ruled": "ruled notebook paper (blue lines, sometimes a red margin)",
    "squared": "squared (grid) paper",
    "pencil": "light pencil, grainy",
    "ballpoint": "blue, red or green ballpoint",
    "white_on_transparent": "white ink on a transparent PNG (a drawing app's export)",
}
#: No-digit kinds, drawn in turn: picture ``i`` of the no-digit set is of kind ``NO_DIGIT_KINDS[i % 5]``.
NO_DIGIT_KINDS = ("landscape", "letters", "blank", "doodle", "noise")
PHOTO_SIZE = (640, 480)  # (width, height) of a landscape photo; portrait photos are 480x640


def _rng(seed: int, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), index])


# --- ink -----------------------------------------------------------------------------------------------------


def digit_coverage(digit: np.ndarray, height: int) -> np.ndarray:
    """Ink coverage float32 (h, w) in [0, 1] of a 28x28 MNIST digit cropped to its ink and enlarged to ``height`` rows."""
    rows, cols = np.nonzero(digit > 0)
    crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32) / 255.0
    crop = np.pad(crop, 1)
    scale = height / crop.shape[0]
    size = (max(2, round(crop.shape[1] * scale)), max(2, round(crop.shape[0] * scale)))
    return np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def number_coverage(digits: list[np.ndarray], height: int, rng: np.random.Generator) -> np.ndarray:
    """Several digits side by side, bottoms roughly aligned, gaps of 0.08-0.35 digit heights, small jitter."""
    parts = [digit_coverage(d, round(height * rng.uniform(0.9, 1.05))) for d in digits]
    gaps = [round(height * rng.uniform(0.08, 0.35)) for _ in parts[1:]]
    width = sum(p.shape[1] for p in parts) + sum(gaps)
    canvas = np.zeros((round(height * 1.2), width), np.float32)
    x = 0
    for i, part in enumerate(parts):
        y = canvas.shape[0] - part.shape[0] - int(rng.integers(0, max(1, height // 10)))
        canvas[y : y + part.shape[0], x : x + part.shape[1]] = np.maximum(
            canvas[y : y + part.shape[0], x : x + part.shape[1]], part
        )
        x += part.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return canvas


def _text_coverage(text: str, height: int, rng: np.random.Generator) -> np.ndarray:
    """Letters drawn with Pillow's built-in scalable font, slanted a little, as coverage float32 in [0, 1]."""
    font = ImageFont.load_default(size=height)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(image).text(
        (4 - left, 4 - top),
        text,
        fill=255,
        font=font,
        stroke_width=int(rng.integers(0, max(1, height // 18) + 1)),
        stroke_fill=255,
    )
    pixels = np.asarray(image, np.float32) / 255.0
    shear = rng.uniform(-0.2, 0.2)
    matrix = np.float32([[1, shear, -shear * pixels.shape[0] / 2], [0, 1, 0]])
    return cv2.warpAffine(pixels, matrix, (pixels.shape[1], pixels.shape[0]))


# --- paper, table, light, camera --------------------------------------------------------------------------------


def _paper(size: tuple[int, int], rng: np.random.Generator, lines: str = "", line_step: int = 40) -> np.ndarray:
    """Paper float32 (h, w, 3) in 0-255: a warm or cool white, fibre grain, optional ruled or squared lines."""
    width, height = size
    colour = np.array([rng.uniform(225, 250), rng.uniform(222, 248), rng.uniform(210, 245)], np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.2) * rng.uniform(2, 5)
    paper = colour[None, None, :] + grain[..., None] + rng.normal(0, 1.5, (height, width, 1)).astype(np.float32)
    line_colour = np.array([rng.uniform(120, 170), rng.uniform(150, 190), rng.uniform(200, 235)], np.float32)
    thickness = int(rng.integers(1, 3))
    if lines in ("ruled", "squared"):
        offset = int(rng.integers(0, line_step))
        for y in range(offset, height, line_step):
            paper[y : y + thickness] = paper[y : y + thickness] * 0.35 + line_colour * 0.65
        if lines == "squared":
            for x in range(int(rng.integers(0, line_step)), width, line_step):
                paper[:, x : x + thickness] = paper[:, x : x + thickness] * 0.35 + line_colour * 0.65
        elif rng.random() < 0.5:  # the red margin of a notebook page
            x = int(width * rng.uniform(0.08, 0.15))
            paper[:, x : x + 2] = paper[:, x : x + 2] * 0.3 + np.array([225, 90, 95], np.float32) * 0.7
    return paper


def _put_ink(
    paper: np.ndarray,
    coverage: np.ndarray,
    colour,
    rng: np.random.Generator,
    opacity: float = 0.95,
    grain: float = 0.0,
    place: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Blend ``coverage`` into ``paper`` in ``colour`` (RGB) at a random place (or the given centre fractions);
    ``grain`` > 0 makes the ink patchy like pencil on paper fibre. Returns the top-left corner used."""
    height, width = coverage.shape
    if place is None:
        top = int(
            rng.integers(
                int(paper.shape[0] * 0.12), max(int(paper.shape[0] * 0.12) + 1, int(paper.shape[0] * 0.88) - height)
            )
        )
        left = int(
            rng.integers(
                int(paper.shape[1] * 0.1), max(int(paper.shape[1] * 0.1) + 1, int(paper.shape[1] * 0.9) - width)
            )
        )
    else:
        top, left = int(place[0] * paper.shape[0] - height / 2), int(place[1] * paper.shape[1] - width / 2)
    alpha = coverage * opacity
    if grain:
        texture = np.clip(1.0 - grain * np.abs(rng.normal(0, 1, coverage.shape)), 0.2, 1.0).astype(np.float32)
        alpha = alpha * cv2.GaussianBlur(texture, (3, 3), 0.7)
    window = paper[top : top + height, left : left + width]
    window[:] = window * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]
    return top, left


def _table(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A table float32 (h, w, 3): wood (brown, grain stripes) or cloth (grey-blue, fine texture), darker than paper."""
    width, height = size
    if rng.random() < 0.6:
        base = np.array([rng.uniform(90, 150), rng.uniform(55, 100), rng.uniform(25, 60)], np.float32)
        y = np.arange(height, dtype=np.float32)[:, None]
        x = np.arange(width, dtype=np.float32)[None, :]
        angle = rng.uniform(-0.3, 0.3)
        wave = np.sin((y + angle * x) / rng.uniform(3, 9) + 3 * np.sin(x / rng.uniform(40, 120)))
        texture = 18 * wave + cv2.GaussianBlur(rng.normal(0, 8, (height, width)).astype(np.float32), (0, 0), 2)
    else:
        base = np.array([rng.uniform(40, 110)] * 3, np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
        texture = cv2.GaussianBlur(rng.normal(0, 12, (height, width)).astype(np.float32), (0, 0), 0.8)
    return np.clip(base[None, None, :] + texture[..., None], 0, 255)


def _lay_on_table(
    paper: np.ndarray,
    rng: np.random.Generator,
    tilt_deg: float,
    portrait: bool,
    fill: tuple[float, float] = (0.55, 0.8),
) -> np.ndarray:
    """Photograph ``paper`` lying on a table: a pinhole camera looking down, its axis ``tilt_deg`` off vertical,
    the sheet turned up to 20 deg in its plane and covering ``fill`` of the frame's height."""
    size = (PHOTO_SIZE[1], PHOTO_SIZE[0]) if portrait else PHOTO_SIZE
    height, width = paper.shape[:2]
    corners = np.float32(
        [
            [-width / 2, -height / 2, 0],
            [width / 2, -height / 2, 0],
            [width / 2, height / 2, 0],
            [-width / 2, height / 2, 0],
        ]
    )
    turn = math.radians(rng.uniform(-20, 20))
    corners[:, :2] = corners[:, :2] @ np.float32([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    tilt = math.radians(tilt_deg) * (1 if rng.random() < 0.5 else -1)
    yaw = math.radians(rng.uniform(-0.5, 0.5) * tilt_deg)
    rot_x = np.float32([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    rot_y = np.float32([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    world = corners @ (rot_y @ rot_x).T + np.float32([0, 0, 2.0 * max(height, width)])
    image = world[:, :2] / world[:, 2:]  # normalised image coordinates
    span = image.max(0) - image.min(0)
    scale = rng.uniform(*fill) * min(size[0] / span[0], size[1] / span[1]) * 1.0
    image = (image - image.mean(0)) * scale
    shift = np.float32([size[0] / 2, size[1] / 2]) + rng.uniform(-0.08, 0.08, 2).astype(np.float32) * np.float32(size)
    target = (image + shift).astype(np.float32)
    source = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(source, target)
    table = _table(size, rng)
    sheet = cv2.warpPerspective(paper, matrix, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpPerspective(np.ones((height, width), np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    return table * (1 - mask[..., None]) + sheet * mask[..., None]


def _lighting(photo: np.ndarray, rng: np.random.Generator, gradient: float, shadow: float) -> np.ndarray:
    """Multiply by uneven light: a linear gradient losing up to ``gradient`` of the light, a vignette, and (if
    ``shadow`` > 0) a hard-edged shadow (an object's straight edge) keeping ``1 - shadow`` of the light."""
    height, width = photo.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(angle) * x / width + np.sin(angle) * y / height
    ramp = (ramp - ramp.min()) / max(1e-6, ramp.max() - ramp.min())
    light = 1.0 - gradient * ramp
    radius = ((x - width / 2) ** 2 + (y - height / 2) ** 2) / (width**2 + height**2)
    light *= 1.0 - rng.uniform(0.0, 0.5) * radius
    if shadow > 0:
        # a straight shadow edge through a point near the middle, at any angle: half the frame is in shadow
        cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
        theta = rng.uniform(0, 2 * math.pi)
        side = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
        penumbra = rng.uniform(0.5, 2.5)
        inside = 1.0 / (1.0 + np.exp(np.clip(-side / penumbra, -50, 50)))
        light *= 1.0 - shadow * inside
    return photo * light[..., None]


def _camera(photo: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    if blur > 0:
        photo = cv2.GaussianBlur(photo, (0, 0), blur)
    return np.clip(photo + rng.normal(0, noise, photo.shape).astype(np.float32), 0, 255)


def _save_jpeg(photo: np.ndarray, path: Path, quality: int) -> Path:
    Image.fromarray(np.round(photo).astype(np.uint8), "RGB").save(path, "JPEG", quality=int(quality))
    return path


# --- the kinds --------------------------------------------------------------------------------------------------


def _sheet_with(
    coverage: np.ndarray,
    rng: np.random.Generator,
    lines: str = "",
    colour=None,
    opacity: float = 0.95,
    grain: float = 0.0,
) -> np.ndarray:
    """A sheet about 1.5-2.5 ink heights tall around ``coverage`` (ruled: line spacing about the ink's height)."""
    height, width = coverage.shape
    sheet_h = int(height * rng.uniform(2.0, 3.2))
    sheet_w = max(int(sheet_h * rng.uniform(0.7, 1.4)), int(width * 1.5))
    step = int(height * rng.uniform(0.55, 0.8)) if lines == "squared" else int(height * rng.uniform(0.9, 1.3))
    paper = _paper((sheet_w, sheet_h), rng, lines, step)
    if colour is None:
        colour = [rng.uniform(10, 45), rng.uniform(10, 45), rng.uniform(30, 70)]
    _put_ink(paper, coverage, colour, rng, opacity, grain)
    return paper


def photo_of(coverage: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """An RGB photo float32 (h, w, 3) of ``coverage`` written on paper the way ``kind`` says, and its JPEG quality."""
    portrait = rng.random() < 0.3
    tilt, gradient, shadow, blur, noise, quality = (
        rng.uniform(0, 6),
        rng.uniform(0, 0.3),
        0.0,
        rng.uniform(0.3, 0.8),
        rng.uniform(1.5, 3.5),
        int(rng.integers(75, 92)),
    )
    lines, colour, opacity, grain = "", None, 0.95, 0.0
    if kind == "shadow":
        gradient, shadow = rng.uniform(0.3, 0.55), rng.uniform(0.35, 0.6)
    elif kind == "tilted":
        tilt, blur, quality = rng.uniform(10, 25), rng.uniform(0.8, 1.4), int(rng.integers(55, 76))
    elif kind in ("ruled", "squared"):
        lines = kind
    elif kind == "pencil":
        colour, opacity, grain = [rng.uniform(95, 135)] * 3, rng.uniform(0.55, 0.8), rng.uniform(0.2, 0.45)
    elif kind == "ballpoint":
        colour = [
            [rng.uniform(20, 60), rng.uniform(40, 90), rng.uniform(150, 210)],  # blue
            [rng.uniform(170, 215), rng.uniform(20, 60), rng.uniform(30, 70)],  # red
            [rng.uniform(20, 60), rng.uniform(110, 150), rng.uniform(50, 90)],
        ][int(rng.integers(0, 3))]
        opacity = rng.uniform(0.75, 0.95)
    paper = _sheet_with(coverage, rng, lines, colour, opacity, grain)
    photo = _lay_on_table(paper, rng, tilt, portrait, fill=(0.6, 0.85) if kind != "tilted" else (0.55, 0.75))
    photo = _lighting(photo, rng, gradient, shadow)
    return _camera(photo, rng, blur, noise), quality


def white_on_transparent(coverage: np.ndarray, path: Path, rng: np.random.Generator) -> Path:
    """A drawing app's PNG: white ink, alpha = the stroke, transparent white or black elsewhere, 256-512 px."""
    side = int(rng.integers(256, 513))
    scale = side * rng.uniform(0.45, 0.8) / coverage.shape[0]
    ink = cv2.resize(
        coverage,
        (max(2, round(coverage.shape[1] * scale)), max(2, round(coverage.shape[0] * scale))),
        interpolation=cv2.INTER_CUBIC,
    ).clip(0, 1)
    rgba = np.zeros((side, side, 4), np.float32)
    rgba[..., :3] = 255.0 if rng.random() < 0.5 else 0.0  # the colour of fully transparent pixels varies by app
    top = int(rng.integers(0, side - ink.shape[0] + 1))
    left = int(rng.integers(0, side - ink.shape[1] + 1))
    rgba[top : top + ink.shape[0], left : left + ink.shape[1], :3] = np.where(
        ink[..., None] > 0, 255.0, rgba[top : top + ink.shape[0], left : left + ink.shape[1], :3]
    )
    rgba[top : top + ink.shape[0], left : left + ink.shape[1], 3] = 255.0 * ink
    Image.fromarray(np.round(rgba).astype(np.uint8), "RGBA").save(path, "PNG")
    return path


def write_digit_photo(digit: np.ndarray, kind: str, path: Path, rng: np.random.Generator) -> Path:
    """One picture of ``kind`` (a key of :data:`DIGIT_KINDS`) of one 28x28 test digit; JPEG, or PNG for
    ``white_on_transparent`` (``path``'s suffix is replaced accordingly)."""
    coverage = digit_coverage(digit, int(rng.integers(60, 130)))
    if kind == "white_on_transparent":
        return white_on_transparent(coverage, path.with_suffix(".png"), rng)
    photo, quality = photo_of(coverage, kind, rng)
    return _save_jpeg(photo, path.with_suffix(".jpg"), quality)


def write_number_photo(digits: list[np.ndarray], path: Path, rng: np.random.Generator) -> Path:
    """A photo of a whole number written on paper on a table (digits side by side, mild tilt, blur and JPEG)."""
    coverage = number_coverage(digits, int(rng.integers(45, 75)), rng)
    photo, quality = photo_of(coverage, "table_paper", rng)
    return _save_jpeg(photo, path.with_suffix(".jpg"), quality)


# --- no digit ---------------------------------------------------------------------------------------------------


def _landscape(rng: np.random.Generator) -> np.ndarray:
    """Sky with a gradient, a sun or moon, mountain ridges, a treeline or a lake: a scene with no writing."""
    width, height = PHOTO_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform(90, 220, 3), rng.uniform(150, 255, 3)
    photo = (top[None, None] + (bottom - top)[None, None] * (y / height)[..., None]).astype(np.float32)
    if rng.random() < 0.7:
        cx, cy, r = rng.uniform(0.1, 0.9) * width, rng.uniform(0.08, 0.35) * height, rng.uniform(15, 45)
        photo[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(200, 255, 3)
    for _layer in range(int(rng.integers(1, 4))):
        base = height * rng.uniform(0.35, 0.75)
        ridge = base + sum(
            rng.uniform(10, 60) / (k + 1) * np.sin(x[0] / rng.uniform(20, 160) + rng.uniform(0, 6)) for k in range(4)
        )
        colour = rng.uniform(20, 140, 3)
        photo[y > ridge[None, :]] = colour + rng.normal(0, 6, ((y > ridge[None, :]).sum(), 3))
    if rng.random() < 0.5:  # trees: dark triangles along the bottom
        for _ in range(int(rng.integers(5, 25))):
            cx, h = rng.uniform(0, width), rng.uniform(40, 160)
            base = height * rng.uniform(0.8, 1.0)
            pts = np.int32([[cx, base - h], [cx - h / 4, base], [cx + h / 4, base]])
            cv2.fillPoly(photo, [pts], rng.uniform(10, 70, 3).tolist())
    return photo


def _letters(rng: np.random.Generator) -> np.ndarray:
    """Letters or a word (no digit-like letters such as O, I, l, S, Z, B, G) written on paper, photographed."""
    words = ["Hello", "Dear Anna", "KWXM", "Thank you", "apple", "hamster", "yes", "Mark", "Rome", "Wednesday"]
    letters = "AKMWXHRENFYVTkmwhnrwxyv"
    text = words[int(rng.integers(len(words)))] if rng.random() < 0.6 else letters[int(rng.integers(len(letters)))]
    coverage = _text_coverage(text, int(rng.integers(50, 110)), rng)
    if coverage.shape[1] > 900:
        coverage = cv2.resize(
            coverage, (900, int(coverage.shape[0] * 900 / coverage.shape[1])), interpolation=cv2.INTER_AREA
        )
    photo, _ = photo_of(coverage, "table_paper", rng)
    return photo


def _blank(rng: np.random.Generator) -> np.ndarray:
    """An empty sheet (plain, ruled or squared) on a table, sometimes in a hard shadow."""
    lines = ["", "ruled", "squared"][int(rng.integers(0, 3))]
    paper = _paper((int(rng.integers(300, 500)), int(rng.integers(300, 500))), rng, lines, int(rng.integers(30, 60)))
    photo = _lay_on_table(paper, rng, rng.uniform(0, 20), rng.random() < 0.3)
    return _camera(
        _lighting(photo, rng, rng.uniform(0, 0.4), rng.uniform(0, 0.5) * (rng.random() < 0.5)),
        rng,
        rng.uniform(0.3, 1.0),
        rng.uniform(1.5, 3.5),
    )


def _doodle(rng: np.random.Generator) -> np.ndarray:
    """A doodle on paper: a spiral, a star, a smiley, a house, hatching or a scribble, drawn with a pen."""
    side = 240
    canvas = np.zeros((side, side), np.float32)
    choice = int(rng.integers(0, 6))
    thick = int(rng.integers(3, 8))
    c = side / 2
    if choice == 0:  # spiral
        t = np.linspace(0, rng.uniform(4, 7) * math.pi, 400)
        r = 10 + t * rng.uniform(4, 5.5)
        pts = np.stack([c + r * np.cos(t), c + r * np.sin(t)], 1)
        cv2.polylines(canvas, [pts.astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
    elif choice == 1:  # five-pointed star
        k = np.arange(11)
        r = np.where(k % 2 == 0, 100, 40)
        pts = np.stack([c + r * np.sin(k * math.pi / 5), c - r * np.cos(k * math.pi / 5)], 1)
        cv2.polylines(canvas, [pts.astype(np.int32)], True, 1.0, thick, cv2.LINE_AA)
    elif choice == 2:  # smiley
        cv2.circle(canvas, (int(c), int(c)), 100, 1.0, thick, cv2.LINE_AA)
        cv2.circle(canvas, (int(c - 35), int(c - 30)), 12, 1.0, -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(c + 35), int(c - 30)), 12, 1.0, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, (int(c), int(c + 15)), (55, 40), 0, 20, 160, 1.0, thick, cv2.LINE_AA)
    elif choice == 3:  # house
        pts = np.int32([[30, 110], [120, 25], [210, 110], [210, 215], [30, 215]])
        cv2.polylines(canvas, [pts], True, 1.0, thick, cv2.LINE_AA)
        cv2.rectangle(canvas, (95, 140), (145, 215), 1.0, thick)
        cv2.rectangle(canvas, (155, 125), (190, 160), 1.0, thick)
    elif choice == 4:  # hatching
        for i in range(int(rng.integers(8, 16))):
            x = 20 + i * 14
            cv2.line(canvas, (x, 20), (x + 60, 220), 1.0, thick, cv2.LINE_AA)
    else:  # scribble: a random walk
        pts = np.cumsum(rng.normal(0, 25, (60, 2)), 0)
        pts = (pts - pts.min(0)) / np.maximum(1, pts.max(0) - pts.min(0)) * 200 + 20
        cv2.polylines(canvas, [pts.astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
    canvas = cv2.resize(canvas, None, fx=rng.uniform(0.5, 0.9), fy=rng.uniform(0.5, 0.9), interpolation=cv2.INTER_AREA)
    photo, _ = photo_of(np.clip(canvas, 0, 1), "table_paper", rng)
    return photo


def _noise(rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, coloured blotches or salt and pepper: what a covered lens or a glitch gives."""
    width, height = PHOTO_SIZE
    choice = int(rng.integers(0, 3))
    if choice == 0:
        return rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    if choice == 1:
        blotch = rng.normal(0, 1, (height // 16, width // 16, 3)).astype(np.float32)
        return np.clip(128 + 60 * cv2.resize(blotch, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255)
    base = np.full((height, width, 3), rng.uniform(60, 200), np.float32)
    salt = rng.random((height, width)) < 0.05
    base[salt] = rng.choice([0.0, 255.0], salt.sum())[:, None]
    return base


NO_DIGIT_BUILDERS = {"landscape": _landscape, "letters": _letters, "blank": _blank, "doodle": _doodle, "noise": _noise}


def write_no_digit_photo(kind: str, path: Path, rng: np.random.Generator) -> Path:
    """One picture with no digit, of ``kind`` (one of :data:`NO_DIGIT_KINDS`), as a JPEG."""
    return _save_jpeg(
        np.clip(NO_DIGIT_BUILDERS[kind](rng), 0, 255), path.with_suffix(".jpg"), int(rng.integers(75, 92))
    )


# --- whole sets -------------------------------------------------------------------------------------------------


def write_digit_set(images: np.ndarray, kind: str, folder: Path, seed: int) -> list[Path]:
    """One picture of ``kind`` per digit (uint8 (N, 28, 28) or (N, 1, 28, 28)), named ``{kind}_{i:04d}``, in
    digit order."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images).reshape(-1, 28, 28)
    return [
        write_digit_photo(digit, kind, folder / f"{kind}_{i:04d}", _rng(seed, kind, i))
        for i, digit in enumerate(images)
    ]


def write_number_set(
    images: np.ndarray, labels: np.ndarray, count: int, folder: Path, seed: int, lengths: tuple[int, int] = (3, 5)
) -> list[tuple[Path, str]]:
    """``count`` photos of numbers of 3-5 digits drawn (without repeats within a number) from the given test digits;
    returns (path, the number's digits as a string)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = np.asarray(images).reshape(-1, 28, 28), np.asarray(labels)
    out = []
    for i in range(count):
        rng = _rng(seed, "number", i)
        pick = rng.choice(len(images), int(rng.integers(lengths[0], lengths[1] + 1)), replace=False)
        path = write_number_photo([images[j] for j in pick], folder / f"number_{i:04d}", rng)
        out.append((path, "".join(str(int(labels[j])) for j in pick)))
    return out


def write_no_digit_set(count: int, folder: Path, seed: int) -> list[Path]:
    """``count`` pictures with no digit, the kinds of :data:`NO_DIGIT_KINDS` in turn, named ``nodigit_{kind}_{i}``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_no_digit_photo(
            NO_DIGIT_KINDS[i % len(NO_DIGIT_KINDS)],
            folder / f"nodigit_{NO_DIGIT_KINDS[i % len(NO_DIGIT_KINDS)]}_{i:04d}",
            _rng(seed, "nodigit", i),
        )
        for i in range(count)
    ]


def measure(
    probs_fn,
    images: np.ndarray,
    labels: np.ndarray,
    folder: Path,
    seed: int,
    per_kind: int,
    numbers: int,
    no_digits: int,
    refusal_digits: int,
) -> dict[str, float]:
    """The issue's acceptance figures for a model's ``probs_fn`` (uint8 (K, 1, 28, 28) -> float32 (K, 10)).

    Writes ``per_kind`` photos of every kind in :data:`DIGIT_KINDS` from the first test digits given,
    ``numbers`` photos of 3-5 digit numbers and ``no_digits`` pictures without a digit, reads them all with
    :func:`mnist_lit.pictures.read_picture` + :func:`mnist_lit.pictures.classify`, and feeds the first
    ``refusal_digits`` untouched test digits (28x28, as pictures) through the same road.

    Returns:
        ``originals`` (accuracy of ``probs_fn`` on the untouched digits used for the kinds), one accuracy per
        kind (a refused or multi-digit answer counts wrong), ``numbers`` (read exactly), ``no_digit_refused``,
        ``false_refusal`` (fraction of the real test digits refused) and ``false_refusal_photos`` (over all
        single-digit photos).
    """
    import torch

    from mnist_lit.pictures import classify, read_picture

    images, labels = np.asarray(images).reshape(-1, 28, 28), np.asarray(labels)
    result: dict[str, float] = {}
    with torch.inference_mode():
        probs = probs_fn(torch.from_numpy(images[:per_kind]).unsqueeze(1))
    result["originals"] = float((probs.argmax(1).numpy() == labels[:per_kind]).mean())
    refused_photos = 0
    for kind in DIGIT_KINDS:
        files = write_digit_set(images[:per_kind], kind, folder / kind, seed)
        readings = [classify(read_picture(f), probs_fn) for f in files]
        result[kind] = float(np.mean([r.digits == str(int(y)) for r, y in zip(readings, labels, strict=False)]))
        refused_photos += sum(bool(r.error) for r in readings)
    result["false_refusal_photos"] = refused_photos / (per_kind * len(DIGIT_KINDS))
    pairs = write_number_set(images, labels, numbers, folder / "numbers", seed)
    result["numbers"] = float(np.mean([classify(read_picture(p), probs_fn).digits == truth for p, truth in pairs]))
    files = write_no_digit_set(no_digits, folder / "no_digit", seed)
    result["no_digit_refused"] = float(np.mean([bool(classify(read_picture(f), probs_fn).error) for f in files]))
    originals = [Image.fromarray(digit) for digit in images[:refusal_digits]]
    result["false_refusal"] = float(np.mean([bool(classify(read_picture(im), probs_fn).error) for im in originals]))
    return result
