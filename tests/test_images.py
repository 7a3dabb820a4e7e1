"""Predicting on the user's own pictures: preprocessing (mnist_lit.pictures.frame) and `predict --data.predict_path`.

Every picture is built from real MNIST test digits (tests/user_pictures.py); the model is the shared
`trained_run` (configs/mnist.yaml, 5 epochs on ../shared/data/mnist-10k).
"""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import CONFIG, run_cli, version_dirs
from PIL import Image
from user_pictures import KINDS, _paper, _to_pil, accuracy_by_kind, predict_files, write_pictures

from mnist_lit.callbacks import PICTURE_COLUMNS
from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split
from mnist_lit.errors import DataError, ImageError, ImageTooLargeError, NoDigitFoundError
from mnist_lit.pictures import list_images, preprocess_image_uint8
from mnist_lit.pictures import (
    preprocess_image_uint8 as preprocess_image,
)

NUM_DIGITS = 300  # per kind of picture: every 33rd of the 10,000 test digits


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    return images[::33][:NUM_DIGITS], labels[::33][:NUM_DIGITS]


@pytest.fixture(scope="module")
def model(trained_run):
    return load_model(trained_run["best_ckpt"])[0]


def _pil(digit: torch.Tensor) -> Image.Image:
    return Image.frombytes("L", (28, 28), digit.reshape(28, 28).numpy().tobytes())


@pytest.mark.slow
def test_user_pictures_are_recognised_nearly_as_well_as_the_originals(model, test_digits, tmp_path):
    images, labels = test_digits
    accuracy = accuracy_by_kind(model, images, labels, tmp_path)
    print("accuracy:", {kind: round(acc, 4) for kind, acc in accuracy.items()})
    assert accuracy["originals"] > 0.9  # the trained model itself is sound
    for kind in KINDS:
        assert accuracy[kind] >= 0.95 * accuracy["originals"], (kind, accuracy)
    # the pictures really are what their names say
    jpeg = Image.open(tmp_path / "exif_rotated_jpeg" / "exif_rotated_jpeg_00000.jpg")
    assert jpeg.getexif()[0x0112] == 6 and jpeg.size == (480, 360)  # stored landscape, shown portrait
    gray16 = (tmp_path / "gray16_png" / "gray16_png_00000.png").read_bytes()
    assert gray16[24:26] == b"\x10\x00"  # IHDR: bit depth 16, colour type 0 (grayscale)
    rgba = Image.open(tmp_path / "rgba_transparent" / "rgba_transparent_00000.png")
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (0, 0, 0, 0)  # transparent *black* background
    paper = Image.open(tmp_path / "paper_jpeg" / "paper_jpeg_00000.jpg")
    assert paper.format == "JPEG" and paper.mode == "RGB" and paper.size == (480, 360)


def test_centred_mnist_digit_keeps_its_centre_of_mass_and_box(test_digits):
    images, _ = test_digits
    rows = torch.arange(28.0)
    similarities = []
    for digit in images[:200]:
        out = preprocess_image_uint8(_pil(digit))
        assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
        pixels = out[0].float()
        mass = pixels.sum()
        com = ((pixels.sum(1) * rows).sum() / mass, (pixels.sum(0) * rows).sum() / mass)
        assert abs(com[0] - 14) <= 1 and abs(com[1] - 14) <= 1, com
        ink_rows, ink_cols = pixels.gt(0).any(1).nonzero(), pixels.gt(0).any(0).nonzero()
        assert ink_rows.max() - ink_rows.min() + 1 <= 20 and ink_cols.max() - ink_cols.min() + 1 <= 20
        original = digit[0].float()  # still the same digit, up to a 1-px shift
        similarities.append(
            max(
                float((original.roll((dy, dx), (0, 1)) * pixels).sum() / (original.norm() * pixels.norm()))
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            )
        )
    assert min(similarities) > 0.85 and sum(similarities) / len(similarities) > 0.97


def test_every_image_mode_gives_the_same_digit(test_digits, tmp_path):
    digit = test_digits[0][0]
    ink = torch.nn.functional.interpolate(digit.float()[None] / 255, scale_factor=4, mode="bicubic")[0, 0].clamp(0, 1)
    gray = Image.frombytes("L", (112, 112), (255 - 230 * ink).round().to(torch.uint8).numpy().tobytes())
    reference = preprocess_image(gray)
    assert (
        reference.dtype == torch.uint8
        and reference.shape == (1, 28, 28)
        and 0 <= reference.min() < reference.max() <= 255
    )
    reference = reference.float()
    variants = {
        "RGB": gray.convert("RGB"),
        "RGBA": gray.convert("RGBA"),
        "LA": gray.convert("LA"),
        "P": gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "1": gray.convert("1", dither=Image.Dither.NONE),
        "I;16": Image.frombytes(
            "I;16", gray.size, ((255 - 230 * ink) * 257).round().to(torch.int32).numpy().astype("<u2").tobytes()
        ),
        "I": gray.convert("I"),
    }
    for mode, image in variants.items():
        assert image.mode == mode
        path = tmp_path / f"digit_{mode.replace(';', '')}.{'tif' if mode == 'I' else 'png'}"  # PNG has no 32-bit mode"
        image.save(path)
        out = preprocess_image(path).float()
        similarity = float((out * reference).sum() / (out.norm() * reference.norm()))
        assert similarity > 0.95, (mode, similarity)


def test_blank_pictures_give_no_digit_found(tmp_path):
    blanks = {
        "white.png": Image.new("L", (300, 200), 255),
        "black.png": Image.new("RGB", (64, 64), "black"),
        "transparent.png": Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    }
    paper = _to_pil(_paper(360, 480, (226, 218, 204), torch.Generator().manual_seed(0)).clamp(0, 255))
    blanks["paper.jpg"] = paper  # grain noise and uneven light, no ink
    for name, image in blanks.items():
        image.save(tmp_path / name)
        with pytest.raises(NoDigitFoundError, match=f"^{tmp_path / name}: no digit found"):
            preprocess_image(tmp_path / name)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR chunk is patched to claim width x height (CRC fixed): a cheap decompression bomb."""
    import io

    buffer = io.BytesIO()
    Image.new("L", (1, 1), 128).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_oversized_header_is_refused_before_decoding(tmp_path, test_digits):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_claiming(20_000, 20_000))
    with pytest.raises(Image.DecompressionBombError):  # a real bomb header: Pillow itself would refuse it in open()
        Image.open(huge)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: the header claims 400,000,000 pixels.*not decoded"):
        preprocess_image(huge)
    # Below Pillow's own limit our check decides: 9000x9000 holds 1 real pixel, decoding would fail differently.
    big = tmp_path / "big.png"
    big.write_bytes(_png_claiming(9_000, 9_000))
    assert Image.open(big).size == (9_000, 9_000)
    with pytest.raises(ImageTooLargeError, match=r"9000x9000 = 81,000,000 pixels, more than the limit of 64,000,000"):
        preprocess_image(big)
    with pytest.raises(ImageError, match=r"big\.png: damaged or truncated image data"):  # what decoding it would give
        preprocess_image(big, max_pixels=100_000_000)
    # the limit is a parameter: a real photo-sized picture is refused under a small one, accepted otherwise
    photo = write_pictures(test_digits[0][:1], tmp_path, "paper_jpeg")[0]
    with pytest.raises(ImageTooLargeError, match=r"480x360 = 172,800 pixels"):
        preprocess_image(photo, max_pixels=100_000)
    assert preprocess_image(photo).shape == (1, 28, 28)


def test_list_images_takes_a_file_a_folder_or_a_glob(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.png").write_bytes(b"x")
    assert list_images(folder) == [str(folder / n) for n in ("a.jpg", "b.PNG", "c.webp")]
    assert list_images(f"{folder}/**/*.png") == [str(folder / "sub" / "d.png")]
    assert list_images(f"{folder}/*.txt") == [str(folder / "notes.txt")]  # a glob takes what it matches
    assert list_images(folder / "notes.txt") == [str(folder / "notes.txt")]
    with pytest.raises(DataError, match="no such file, folder or glob"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataError, match="no files match"):
        list_images(f"{folder}/*.gif")
    with pytest.raises(DataError, match="no image files"):
        list_images(_empty_dir(tmp_path))


def _empty_dir(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no pictures here")
    return empty


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_predict_cli_on_a_folder_with_bad_files(trained_run, model, test_digits, tmp_path):
    images, labels = test_digits
    pics = tmp_path / "pics"
    good = []
    for k, kind in enumerate(KINDS):  # 3 pictures of each kind, of 3 different digits each
        good += write_pictures(images[3 * k : 3 * k + 3], pics, kind, seed=k)
    whole = (pics / "paper_jpeg_00000.jpg").read_bytes()
    (pics / "corrupt.jpg").write_bytes(whole[: len(whole) // 3])  # a download cut short
    (pics / "notes.png").write_text("shopping list: milk, eggs\n")  # a text file renamed .png
    (pics / "empty.png").write_bytes(b"")  # zero bytes
    Image.new("RGB", (200, 150), (240, 240, 235)).save(pics / "blank.png")  # a photo of an empty page
    bad = {
        "blank.png": "no digit found",
        "corrupt.jpg": "damaged or truncated image data",
        "empty.png": "empty file (0 bytes)",
        "notes.png": "not a readable image",
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    sheet = workdir / "sheet.png"
    common = (
        "--config",
        str(CONFIG),
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--data.data_dir",
        str(tmp_path / "no_mnist_here"),
        "--data.download",
        "false",
    )
    proc = run_cli(
        "predict",
        *common,
        "--data.predict_path",
        str(pics),
        "--data.predict_sheet",
        str(sheet),
        cwd=workdir,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]

    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(bad), error_lines
    for name, reason in bad.items():
        assert sum(line.startswith(f"error: {pics / name}: {reason}") for line in error_lines) == 1, (name, error_lines)

    rows = _read_csv(version_dirs(workdir)[-1] / "predictions.csv")
    assert list(rows[0]) == PICTURE_COLUMNS
    assert [row["file"] for row in rows] == sorted(str(p) for p in [*good, *(pics / name for name in bad)])
    for row in rows:
        name = Path(row["file"]).name
        if name in bad:
            assert row["pred"] == row["confidence"] == "" and f"error: {row['error']}" in error_lines
        assert f"{row['file']}  " in proc.stdout  # the table on stdout
    # every good file predicted, exactly as the library function predicts it
    good_rows = {row["file"]: row for row in rows if not row["error"]}
    assert sorted(good_rows) == sorted(str(p) for p in good)
    probs = predict_files(model, good)
    for file, expected in zip(good, probs, strict=False):
        row = good_rows[str(file)]
        written = torch.tensor([float(row[f"prob_{d}"]) for d in range(10)])
        assert torch.allclose(written, expected, atol=1e-4) and int(row["pred"]) == int(expected.argmax())
        assert float(row["confidence"]) == pytest.approx(float(expected.max()), abs=1e-5)
    correct = sum(
        int(good_rows[str(file)]["pred"]) == int(label) for file, label in zip(good, labels[:12], strict=False)
    )
    with torch.no_grad():  # the same model on the untouched 28x28 originals of these 12 digits
        originals = int((model(images[:12]).argmax(dim=1) == labels[:12]).sum())
    assert correct >= originals - 1
    assert f"Predicted {len(good)} of {len(rows)} pictures ({len(bad)} failed" in proc.stdout

    with Image.open(sheet) as image:  # the matplotlib sheet: a real PNG with a panel pair per file
        assert image.format == "PNG" and image.width >= 800 and image.height >= 4 * 140

    # the same good pictures, chosen by a glob, run clean: the exit status was only about the failures
    clean = run_cli("predict", *common, "--data.predict_path", str(pics / "*_0000[0-2].*"), cwd=workdir)
    assert clean.returncode == 0 and "error: " not in clean.stderr
    assert [row["file"] for row in _read_csv(version_dirs(workdir)[-1] / "predictions.csv")] == sorted(map(str, good))


@pytest.mark.slow
def test_predict_with_no_pictures_stops_before_a_run_folder(trained_run, tmp_path):
    """An empty folder, a missing path, a glob matching nothing: one error line, and no lightning_logs/version_N
    left behind (the pictures are listed before the logger exists)."""
    workdir = tmp_path / "work"
    (workdir / "empty").mkdir(parents=True)
    (workdir / "empty" / "notes.txt").write_text("not a picture\n")
    common = ("--config", str(CONFIG), "--ckpt_path", str(trained_run["best_ckpt"]), "--data.download", "false")
    expected = {
        "empty": "error: empty: no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .pgm, .ppm, .pbm, "
        ".pnm) in this folder",
        "nowhere": "error: nowhere: no such file, folder or glob; give a picture, a folder of pictures or a pattern",
        "empty/*.png": "error: no files match 'empty/*.png'; check the pattern (quote it so the shell leaves it alone)",
    }
    before = len(version_dirs(workdir))
    for path, line in expected.items():
        out = run_cli("predict", *common, "--data.predict_path", path, cwd=workdir, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert [error for error in out.stderr.splitlines() if error.startswith("error:")] == [line]
    assert len(version_dirs(workdir)) == before == 0
