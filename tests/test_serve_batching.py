"""`serve`'s batching of concurrent requests (mnist_lit.serve.batcher) and its reading of small pictures on the event
loop, in process: real test digits, the real networks (the shipped "digit or not" network and the tutorial's CNN)."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import pytest
import torch
from PIL import Image
from serving import user_drawing_png

from mnist_lit.data import load_split
from mnist_lit.ensemble import load_trained
from mnist_lit.errors import ImageError
from mnist_lit.model import MNISTClassifier
from mnist_lit.pictures import classify, read_picture
from mnist_lit.pictures.decode import header_pixels
from mnist_lit.serve.app import (
    INLINE_MAX_BYTES,
    INLINE_MAX_PIXELS,
    predict_picture,
    read_inline,
    score_crops,
)
from mnist_lit.serve.batcher import CropBatcher
from mnist_lit.serve.gate import PredictionGate
from mnist_lit.serve.upload import RequestError


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """The first 40 official test digits, uint8 (40, 1, 28, 28), and their labels."""
    images, labels = load_split(mnist_dir, "test")
    return images[:40], labels[:40]


@pytest.fixture(scope="module")
def score():
    """The app's score function over a freshly initialised tutorial CNN (seed 0) and the shipped digitness network."""
    torch.manual_seed(0)
    return score_crops(MNISTClassifier().eval())


def png(pixels: torch.Tensor) -> bytes:
    """uint8 (1, 28, 28) pixels as a grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(28, 28).numpy()).save(buffer, "PNG")
    return buffer.getvalue()


async def score_together(batcher: CropBatcher, pictures: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    return await asyncio.gather(*(batcher.score(crops) for crops in pictures))


def test_concurrent_pictures_share_passes_and_each_gets_the_scores_of_its_own_crops(digits, score):
    images, _ = digits
    sizes = [1, 3, 1, 2, 4, 1, 10, 1, 2, 1]  # crops per picture (a picture has 1-10)
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    pictures = [images[start : start + size] for start, size in zip(starts, sizes, strict=True)]
    batcher = CropBatcher(score)
    together = asyncio.run(score_together(batcher, pictures))
    assert batcher.pictures == len(pictures) and batcher.batches < len(pictures)
    for crops, (probs, digitness) in zip(pictures, together, strict=True):
        alone_probs, alone_digitness = score(crops)
        assert probs.shape == (len(crops), 10) and digitness.shape == (len(crops),)
        assert torch.allclose(probs, alone_probs, atol=1e-6) and torch.allclose(digitness, alone_digitness, atol=1e-6)
    assert (torch.cat([d for _, d in together]) > 0.5).float().mean() > 0.9  # real digits: the check says "digit"


def test_a_batch_stops_at_max_batch_crops_without_splitting_a_picture(digits, score):
    images, _ = digits
    pictures = [images[0:3], images[3:6], images[6:9], images[9:10]]
    batcher = CropBatcher(score, max_batch_crops=4)
    together = asyncio.run(score_together(batcher, pictures))
    assert [len(p) for p, _ in together] == [3, 3, 3, 1] and batcher.batches == 2  # [3 + 3], [3 + 1]


def test_a_picture_the_networks_cannot_take_fails_only_its_own_request(digits, score):
    images, _ = digits
    wrong = torch.zeros(1, 1, 27, 27, dtype=torch.uint8)  # not 28x28: torch.cat of the batch fails
    batcher = CropBatcher(score)

    async def burst():
        return await asyncio.gather(
            batcher.score(images[:2]), batcher.score(wrong), batcher.score(images[2:3]), return_exceptions=True
        )

    first, failed, third = asyncio.run(burst())
    assert isinstance(failed, RuntimeError)
    assert torch.allclose(first[0], score(images[:2])[0], atol=1e-6)
    assert torch.allclose(third[0], score(images[2:3])[0], atol=1e-6)
    again = asyncio.run(score_together(batcher, [images[3:4]]))  # and the batcher goes on
    assert torch.allclose(again[0][1], score(images[3:4])[1], atol=1e-6)


def test_a_request_that_went_away_is_not_scored(digits, score):
    images, _ = digits
    batcher = CropBatcher(score)

    async def one_goes_away():
        tasks = [asyncio.create_task(batcher.score(images[k : k + 1])) for k in range(3)]
        await asyncio.sleep(0)  # each has queued its crops
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(one_goes_away())
    assert isinstance(results[1], asyncio.CancelledError)
    assert batcher.pictures == 2
    assert torch.allclose(results[2][0], score(images[2:3])[0], atol=1e-6)


def test_small_pictures_read_on_the_event_loop_keep_the_pixel_limit_and_the_one_line_errors(digits, score):
    images, _ = digits
    assert header_pixels(png(images[0])) == 28 * 28 <= INLINE_MAX_PIXELS
    assert header_pixels(b"not a picture") is None
    gate, batcher = PredictionGate(1, 0), CropBatcher(score)
    with pytest.raises(RequestError) as too_many:
        asyncio.run(predict_picture(png(images[0]), "seven.png", 500, gate, batcher))
    assert too_many.value.status == 413 and "784 pixels" in too_many.value.message
    broken = png(images[0])[:60]  # a 28x28 header, its pixel data cut off
    assert header_pixels(broken) == 28 * 28
    with pytest.raises(RequestError) as damaged:
        asyncio.run(predict_picture(broken, "cut.png", 10_000, gate, batcher))
    assert damaged.value.status == 415 and damaged.value.message.startswith("cut.png: ")
    assert batcher.pictures == 0  # refused before any forward pass


def test_answers_in_process_are_those_of_classify_one_picture_at_a_time(trained_run, digits):
    images, labels = digits
    model, _ = load_trained(trained_run["best_ckpt"])
    gate, batcher = PredictionGate(2, 40), CropBatcher(score_crops(model))
    pictures = [png(images[k]) for k in range(40)] + [user_drawing_png(images[k]) for k in range(8)]

    async def all_at_once():
        return await asyncio.gather(
            *(predict_picture(data, "digit.png", 10_000_000, gate, batcher) for data in pictures),
            return_exceptions=True,
        )

    answers = asyncio.run(all_at_once())
    assert batcher.batches < batcher.pictures
    for data, answer in zip(pictures, answers, strict=True):
        alone = classify(read_picture(data), model.probabilities)
        if alone.error:
            assert isinstance(answer, RequestError) and answer.status == 422
            continue
        assert answer["digits"] == alone.digits
        assert answer["digit_confidences"] == pytest.approx(alone.confidences, abs=1e-6)
    right = sum(
        a["digit"] == int(y)
        for a, y in zip(answers, labels.tolist() + labels[:8].tolist(), strict=True)
        if isinstance(a, dict)
    )
    assert right >= 44, f"{right} of 48 real test digits read right"


def padded_png(pixels: torch.Tensor, chunks: int) -> bytes:
    """A valid 28x28 PNG with ``chunks`` empty private chunks after its header (Pillow reads each in Python)."""
    data = png(pixels)
    empty = struct.pack(">I", 0) + b"prIv" + struct.pack(">I", zlib.crc32(b"prIv"))
    return data[:33] + empty * chunks + data[33:]  # 33: the signature and the IHDR chunk


def test_padded_bodies_and_formats_that_decode_while_opening_are_not_read_on_the_event_loop(digits):
    images, _ = digits
    assert read_inline(png(images[0])) and read_inline(padded_png(images[0], 200))
    big = padded_png(images[0], 400)  # still 28x28, but over INLINE_MAX_BYTES: a worker thread reads it
    assert len(big) > INLINE_MAX_BYTES and header_pixels(big) == 28 * 28 and not read_inline(big)
    assert read_picture(big).pixels.shape == (1, 1, 28, 28)
    buffer = io.BytesIO()
    Image.fromarray(images[0].reshape(28, 28).numpy()).save(buffer, "ICO", sizes=[(28, 28)])
    ico = buffer.getvalue()  # Pillow decodes an ICO's picture while opening it, before any pixel limit
    assert header_pixels(ico) is None and not read_inline(ico)
    with pytest.raises(ImageError, match=r"^digit\.ico: not a readable image .*use a PNG, JPEG"):
        read_picture(named(ico, "digit.ico"))


def named(data: bytes, name: str) -> io.BytesIO:
    source = io.BytesIO(data)
    source.name = name
    return source
