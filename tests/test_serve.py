"""HTTP API of `python -m mnist_lit serve`: a real server subprocess on 127.0.0.1, real test digits, real bad requests."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image
from serving import first_of_each_digit, http, user_drawing_png

from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split
from mnist_lit.pictures import read_picture

LIMIT = 5_000_000  # the server's default --max_request_bytes


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    """The first test image of each digit, as users' PNG pictures (black ink on white, 8x, margin): [(label, png)]."""
    images, labels = load_split(mnist_dir, "test")
    return [(int(labels[i]), user_drawing_png(images[i])) for i in first_of_each_digit(labels)]


@pytest.fixture(scope="module")
def reference(trained_run):
    """The checkpoint's LightningModule (mnist_lit.checkpoint.load_model) and its pixel_scale, run in this process."""
    model, _ = load_model(trained_run["best_ckpt"])
    return model, model.hparams.pixel_scale


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, dict]:
    """A multipart/form-data body with one file field, as a browser's FormData sends it."""
    boundary = "----mnistlitboundary7MA4YWxkTrZu0gW"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_alive(server) -> None:
    status, health = http("GET", f"{server['url']}/health")
    assert status == 200 and health["ok"] is True
    assert server["proc"].poll() is None


def test_health_names_the_checkpoint_and_its_pixel_scale(served_model, trained_run, reference):
    status, health = http("GET", f"{served_model['url']}/health")
    assert status == 200 and health["ok"] is True
    assert health["checkpoint"] == str(trained_run["best_ckpt"].resolve())
    assert health["pixel_scale"] == reference[1]
    assert health["max_request_bytes"] == LIMIT


def test_real_digits_as_png_are_predicted_like_predict_on_files(served_model, test_digits, reference):
    model, _pixel_scale = reference
    right = 0
    for label, png in test_digits:
        status, result = http("POST", f"{served_model['url']}/predict", png, {"Content-Type": "image/png"})
        assert status == 200, result
        # same preprocessing as `predict --data.predict_path` (mnist_lit.pictures); the model scales its uint8 input
        crops = read_picture(png).pixels
        assert crops.shape == (1, 1, 28, 28) and result["digits"] == str(result["digit"]) and len(result["boxes"]) == 1
        with torch.no_grad():
            expected = model.predict_step((crops,), 0)["probs"][0]
        probabilities = torch.tensor(result["probabilities"])
        assert probabilities.shape == (10,)
        assert (probabilities - expected).abs().max() <= 1e-5
        assert result["digit"] == int(expected.argmax()) and result["confidence"] == pytest.approx(
            float(expected.max())
        )
        seen = Image.open(io.BytesIO(base64.b64decode(result["image_png_base64"])))
        assert seen.size == (28, 28) and seen.mode == "L"
        assert torch.equal(torch.frombuffer(bytearray(seen.tobytes()), dtype=torch.uint8).view(1, 28, 28), crops[0])
        right += result["digit"] == label
    assert right >= 9, f"only {right} of 10 real test digits predicted right"


def test_multipart_upload_of_a_jpeg(served_model, test_digits):
    label, png = test_digits[7]
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, "JPEG", quality=90)
    body, headers = multipart("file", "seven.jpg", buffer.getvalue(), "image/jpeg")
    status, result = http("POST", f"{served_model['url']}/predict", body, headers)
    assert status == 200, result
    assert result["digit"] == label == 7
    assert sum(result["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (280, 280), 0).save(buffer, "PNG")  # an untouched canvas: black, no ink
    return buffer.getvalue()


BAD_REQUESTS = {
    # name: (body, headers, expected status, words in the error)
    "non_image": (
        b"this is plain text, not a picture\n" * 20,
        {"Content-Type": "image/png"},
        415,
        "not a readable image",
    ),
    "empty": (b"", {"Content-Type": "image/png"}, 400, "empty request body"),
    "over_limit": (b"\x89PNG\r\n\x1a\n" + bytes(LIMIT - 7), {"Content-Type": "image/png"}, 413, "over the limit"),
    "over_limit_chunked": (None, {"Content-Type": "image/png"}, 413, "over the limit"),
    "at_limit_not_an_image": (bytes(LIMIT), {"Content-Type": "image/png"}, 415, "not a readable image"),
    "blank_canvas": (None, {"Content-Type": "image/png"}, 422, "no digit found"),
    "multipart_without_file": (None, None, 400, "without a file"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_json_error_and_server_keeps_serving(served_model, case):
    body, headers, expected, words = BAD_REQUESTS[case]
    if case == "over_limit_chunked":  # no Content-Length: urllib sends an iterable chunked; 6 MB in 64 KiB chunks
        body = iter([bytes(65536)] * 92)
    elif case == "blank_canvas":
        body = blank_png()
    elif case == "multipart_without_file":
        body, headers = multipart("note", "note.txt", b"hello", "text/plain")
        body = body.replace(b'; filename="note.txt"', b"")  # a plain form field, no file
    status, result = http("POST", f"{served_model['url']}/predict", body, headers)
    assert status == expected, result
    assert set(result) == {"error"} and words in result["error"]
    assert "\n" not in result["error"] and " object at 0x" not in result["error"]
    assert_alive(served_model)


def test_still_predicts_after_bad_requests(served_model, test_digits):
    label, png = test_digits[3]
    status, result = http("POST", f"{served_model['url']}/predict", png, {"Content-Type": "image/png"})
    assert status == 200 and result["digit"] == label
