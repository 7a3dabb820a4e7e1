"""Reading digits from phone photos (mnist_lit.pictures) and `predict` on a folder mixing digits, numbers and
pictures with no digit. Photos come from tests/photos.py (real MNIST test digits, fixed seeds); the model is
the shared `trained_run` (configs/mnist.yaml on ../shared/data/mnist-10k)."""

from __future__ import annotations

import csv
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CONFIG, run_cli, version_dirs
from photos import (
    DIGIT_KINDS,
    digit_coverage,
    measure,
    write_digit_set,
    write_no_digit_set,
    write_number_set,
)
from PIL import Image, ImageDraw

from mnist_lit.callbacks import PICTURE_COLUMNS, PredictionWriter
from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split
from mnist_lit.errors import ImageTooLargeError
from mnist_lit.pictures import PictureFiles, classify, read_digits, read_picture
from mnist_lit.pictures.decode import load_gray
from mnist_lit.pictures.ink import WORK_SIDE
from mnist_lit.sheet import render_sheet

SEED = 0  # the pipeline was tuned on seed 1 with other test digits (docs/pictures.md)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    return images.numpy()[:, 0], labels.numpy()


@pytest.fixture(scope="module")
def probs_fn(trained_run):
    model, _ = load_model(trained_run["best_ckpt"])
    return model.probabilities  # uint8 (K, 1, 28, 28) -> float32 (K, 10), the model's own scaling


@pytest.mark.slow
def test_photo_kinds_numbers_and_no_digit_pictures(probs_fn, test_digits, tmp_path):
    images, labels = test_digits
    result = measure(
        probs_fn, images, labels, tmp_path, SEED, per_kind=24, numbers=24, no_digits=30, refusal_digits=1000
    )
    print("measured:", {k: round(v, 4) for k, v in result.items()})
    assert result["originals"] > 0.9
    # The targets where this build meets them on these 24 photos (every kind but shadow >= 0.90 x the
    # originals, false refusals <= 1% of real test digits); regression floors a photo or two under what this
    # build measures where it does not (docs/pictures.md): shadow >= 0.80 x (target 0.90), numbers >= 0.75
    # (target 0.80), no-digit pictures refused >= 0.70 (target 0.90).
    for kind in DIGIT_KINDS:
        assert result[kind] >= (0.80 if kind == "shadow" else 0.90) * result["originals"], (kind, result)
    assert result["numbers"] >= 0.75, result
    assert result["no_digit_refused"] >= 0.70, result
    assert result["false_refusal"] <= 0.01, result


def test_white_ink_on_transparent_png_uses_the_alpha_channel(test_digits, tmp_path):
    images, _ = test_digits
    path = write_digit_set(images[:1], "white_on_transparent", tmp_path, SEED)[0]
    with Image.open(path) as image:  # really white ink: composited onto white it has no contrast at all
        assert image.mode == "RGBA"
        flat = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("L")
        assert flat.getextrema()[0] >= 250
    picture = read_picture(path)
    assert picture.refusal == "" and picture.pixels.shape == (1, 1, 28, 28)
    original, crop = torch.from_numpy(images[0]).float(), picture.pixels[0, 0].float()
    best = max(
        float((original.roll((dy, dx), (0, 1)) * crop).sum() / (original.norm() * crop.norm()))
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    assert best > 0.85, best


def test_boxes_are_in_the_pixels_of_the_full_size_photo(test_digits, tmp_path):
    """A 3000x2000 phone JPEG is decoded reduced (and analysed at 320 px); the boxes still come back in its
    own pixels, around the digits drawn at known places, left to right: each box's top-left corner within 16 px
    (under two analysis pixels) of where the digit's ink starts."""
    images, _labels = test_digits
    photo = np.full((2000, 3000), 235, np.uint8)
    places = [(700, 600), (1300, 650), (1900, 620)]  # (x, y) top-left of each digit, 400 px tall
    starts = []  # (x, y) where each digit's ink starts (coverage over 5%)
    for digit, (x, y) in zip(images[:3], places, strict=False):
        ink = digit_coverage(digit, 400)
        window = photo[y : y + ink.shape[0], x : x + ink.shape[1]]
        window[:] = (window * (1 - ink) + 30 * ink).astype(np.uint8)
        rows, cols = np.nonzero(ink > 0.05)
        starts.append((x + int(cols.min()), y + int(rows.min())))
    path = tmp_path / "big.jpg"
    Image.fromarray(photo).save(path, quality=90)
    picture = read_picture(path)
    assert picture.picture_size == (3000, 2000) and picture.refusal == ""
    assert len(picture.pixels) == 3
    for (x0, y0, _x1, y1), (x, y) in zip(picture.boxes, starts, strict=False):
        assert abs(x0 - x) <= 16 and abs(y0 - y) <= 16 and 350 <= y1 - y0 <= 460, (picture.boxes, starts)


def test_photo_jpegs_are_reduced_in_the_decoder_to_the_analysis_size(tmp_path):
    """A 640x480 JPEG comes out of the decoder at 320x240 in grayscale (no resize left to do); a portrait photo
    stored turned (EXIF orientation 6) is reduced and turned upright, its size as the user sees it."""
    plain = tmp_path / "plain.jpg"
    Image.fromarray(np.full((480, 640, 3), 200, np.uint8)).save(plain, quality=90)
    gray, size = load_gray(plain, 64_000_000, WORK_SIDE)
    assert WORK_SIDE == 320 and gray.shape == (240, 320) and gray.dtype == np.uint8 and size == (640, 480)
    upright = np.full((1280, 960), 230, np.uint8)
    upright[50:150, 100:400] = 20  # a dark bar near the top left of the upright picture
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: rotate 90 degrees clockwise to display
    turned = tmp_path / "turned.jpg"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(turned, quality=90, exif=exif)
    gray, size = load_gray(turned, 64_000_000, WORK_SIDE)
    assert gray.shape == (320, 240) and size == (960, 1280)  # reduced by 1/4, upright
    rows, cols = np.nonzero(gray < 100)
    assert abs(rows.min() - 12.5) <= 1.5 and abs(rows.max() - 36.5) <= 1.5
    assert abs(cols.min() - 25) <= 1.5 and abs(cols.max() - 99.5) <= 1.5
    with pytest.raises(ImageTooLargeError):
        load_gray(turned, 1_000_000, WORK_SIDE)  # the header's 1,228,800 pixels, refused before decoding


def test_pictures_without_a_digit_get_a_reason(tmp_path):
    files = write_no_digit_set(5, tmp_path, SEED)  # one of each kind: landscape, letters, blank, doodle, noise
    blank = next(f for f in files if "blank" in f.name)
    assert read_picture(blank).refusal == f"{blank}: no digit found (nothing stands out from the paper or background)"
    Image.new("RGBA", (64, 64), (255, 255, 255, 0)).save(tmp_path / "transparent.png")
    assert "no digit found" in read_picture(tmp_path / "transparent.png").refusal
    disk = Image.new("L", (400, 300), 235)  # a filled shape (a coin, a dark object), not a pen stroke
    ImageDraw.Draw(disk).ellipse((150, 100, 230, 180), fill=20)
    assert read_picture(disk).refusal.startswith("<image>: not a digit: a filled shape")


def test_read_digits_refuses_low_confidence_and_checks_shapes(test_digits):
    images, _ = test_digits
    picture = read_picture(Image.fromarray(images[0]))
    confident = torch.nn.functional.one_hot(torch.tensor([7]), 10).float()
    assert read_digits(picture, confident).digits == "7"
    unsure = torch.full((1, 10), 0.1)
    reading = read_digits(picture, unsure)
    assert reading.digits == "" and reading.error.startswith("<image>: not a digit: the mark looks like no digit")
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(1, 10\)"):
        read_digits(picture, torch.zeros(2, 10))


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_predict_cli_on_digits_numbers_and_no_digit_pictures(trained_run, probs_fn, test_digits, tmp_path):
    images, labels = test_digits
    pics = tmp_path / "pics"
    singles = write_digit_set(images[:4], "shadow", pics, SEED) + write_digit_set(images[4:6], "ruled", pics, SEED)
    numbers = write_number_set(images[:200], labels[:200], 3, pics, SEED)
    blank = [f for f in write_no_digit_set(5, pics, SEED) if "blank" in f.name or "noise" in f.name]
    for f in pics.glob("nodigit_*"):
        if f not in blank:
            f.unlink()
    # printed letters (seed 5, as tests/test_pictures_digitness.py) that only the digit-or-not check refuses
    letters = [f for f in write_no_digit_set(100, tmp_path / "s5", 5) if "letters" in f.name]
    letters = [f.rename(pics / f"s5_{f.name}") for f in letters if not read_picture(f).refusal]
    (pics / "notes.png").write_text("not a picture\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = run_cli(
        "predict",
        "--config",
        str(CONFIG),
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--data.data_dir",
        str(tmp_path / "no_mnist_here"),
        "--data.download",
        "false",
        "--data.predict_path",
        str(pics),
        "--data.predict_sheet",
        str(workdir / "sheet.png"),
        cwd=workdir,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # files without an answer: exit status 1, as failed files
    assert "Traceback" not in proc.stderr
    rows = {row["file"]: row for row in _read_csv(version_dirs(workdir)[-1] / "predictions.csv")}
    assert list(next(iter(rows.values()))) == PICTURE_COLUMNS
    assert len(rows) == len(singles) + len(numbers) + len(blank) + len(letters) + 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for file in [*map(str, singles), *(str(p) for p, _ in numbers), *map(str, letters)]:  # what the library reads
        row, reading = rows[file], classify(read_picture(file), probs_fn)
        assert row["digits"] == reading.digits and row["error"] == reading.error
        if reading.digits:
            assert len(row["boxes"].split(";")) == len(reading.digits)
            assert [float(c) for c in row["digit_confidences"].split()] == pytest.approx(reading.confidences, abs=1e-6)
            assert float(row["confidence"]) == pytest.approx(reading.confidence, abs=1e-6)
        if len(reading.digits) == 1:
            assert row["pred"] == reading.digits and row["prob_0"] != ""
        elif reading.digits:
            assert row["pred"] == "" and row["prob_0"] == ""
        else:
            assert f"error: {row['error']}" in errors
    assert sum(rows[str(p)]["digits"] == truth for p, truth in numbers) >= 2
    assert len(letters) == 9 and all(": not a digit: " in rows[str(f)]["error"] for f in letters)  # low confidence
    assert sum("looks like a letter" in rows[str(f)]["error"] for f in letters) >= 6  # or the digit-or-not check
    assert sum(rows[str(p)]["digits"] == str(int(y)) for p, y in zip(singles, labels[:6], strict=False)) >= 5
    for file in [*map(str, blank), str(pics / "notes.png")]:
        row = rows[file]
        assert row["pred"] == row["digits"] == row["confidence"] == "" and row["error"].startswith(f"{file}: ")
        assert f"error: {row['error']}" in errors
    assert "no digit found" in rows[str(next(f for f in blank if "blank" in f.name))]["error"]
    with Image.open(workdir / "sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width >= 800


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (1, 5000), (5000, 1), (2, 700)])
def test_degenerate_pictures_are_refused_not_crashed(size):
    for fill in (0, 255):
        picture = read_picture(Image.new("L", size, fill))
        assert len(picture.pixels) == 0 and picture.refusal.startswith("<image>: no digit found")


def _forbid_reading_pictures(monkeypatch):
    """Every loaded mnist_lit module's ``read_picture`` raises from now on: the sheet may not read a picture again."""

    def read_again(*args, **kwargs):
        raise AssertionError(f"a picture was read again: {args}")

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "mnist_lit" and hasattr(module, "read_picture"):
            monkeypatch.setattr(module, "read_picture", read_again)


def _orange_pixels(png) -> int:
    """Pixels of the sheet in the boxes' colour (matplotlib's tab:orange, 255 127 14)."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - (255, 127, 14)).sum(-1) < 40).sum())


def test_sheet_is_drawn_from_the_crops_and_quads_it_is_given(test_digits, tmp_path, monkeypatch):
    images, labels = test_digits
    pics = tmp_path / "pics"
    files = [*write_digit_set(images[:2], "ballpoint", pics, SEED), *write_number_set(images, labels, 1, pics, SEED)]
    (pics / "notes.png").write_text("not a picture\n")
    files = [str(f) for f in [*files[:2], files[2][0], pics / "notes.png"]]
    crops, _, errors, counts, quads = PictureFiles(files).__getitems__([0, 1, 2, 3])
    assert errors[:3] == ["", "", ""] and errors[3] and counts[3] == 0 and min(counts[:3]) >= 1
    parts = torch.split(crops, counts)
    entries = [(f, "7" * k, 0.9, e, c, q) for f, k, e, c, q in zip(files, counts, errors, parts, quads, strict=True)]
    _forbid_reading_pictures(monkeypatch)
    sheet = render_sheet(entries, tmp_path / "sheet.png")
    with Image.open(sheet) as png:  # one row of 4 pairs of 1.3 x 1.55 inch panels at 100 dpi
        assert png.format == "PNG" and png.size == (1040, 155)
    assert _orange_pixels(sheet) > 100  # the boxes, drawn from the quads
    no_boxes = [(*entry[:5], np.zeros((0, 4, 2), np.float32)) for entry in entries]
    assert _orange_pixels(render_sheet(no_boxes, tmp_path / "no_boxes.png")) == 0


def test_prediction_writer_keeps_the_crops_of_the_sheets_pictures_only(test_digits, tmp_path, monkeypatch, capsys):
    images, _ = test_digits
    dataset = PictureFiles([str(f) for f in write_digit_set(images[:5], "ballpoint", tmp_path / "pics", SEED)])
    monkeypatch.setattr("mnist_lit.sheet.SHEET_MAX_IMAGES", 3)
    sheet = tmp_path / "sheet.png"
    for asked in (None, str(sheet)):
        trainer = SimpleNamespace(
            datamodule=SimpleNamespace(hparams={"predict_sheet": asked}), world_size=1, is_global_zero=True
        )
        writer = PredictionWriter(output_dir=str(tmp_path / "run"))
        writer.on_predict_epoch_start(trainer, None)
        for indices in ([4, 3], [0, 2], [1]):  # batches out of index order
            batch = dataset.__getitems__(indices)
            probs = torch.nn.functional.one_hot(torch.full((len(batch[0]),), 7), 10).float()
            writer.write_on_batch_end(trainer, None, {"probs": probs, "preds": probs.argmax(1)}, indices, batch, 0)
            assert len(writer._sheet) <= (3 if asked else 0)  # bounded while predicting
    assert [index for index, _, _ in writer._sheet] == [0, 1, 2]
    for index, crops, quads in writer._sheet:
        assert torch.equal(crops, dataset[index][0]) and crops.dtype == torch.uint8
        assert np.array_equal(quads, dataset[index][3]) and quads.dtype == np.float32
    _forbid_reading_pictures(monkeypatch)
    writer.on_predict_epoch_end(trainer, None)
    writer.teardown(trainer, None, "predict")
    assert f"Wrote the sheet of 3 of 5 pictures to {sheet}" in capsys.readouterr().out
    with Image.open(sheet) as png:  # one row of 3 pairs
        assert png.size == (780, 155)
