"""HTTP API of `python -m mnist_lit serve`: a real server subprocess on 127.0.0.1, real test digits, real bad requests."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from serving import first_of_each_digit, http, serve, user_drawing_png

from mnist_lit.checkpoint import load_model
from mnist_lit.cli import main
from mnist_lit.data import load_split
from mnist_lit.limits import BODY_IDLE_SECONDS, GRACEFUL_SHUTDOWN_SECONDS
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


def as_png(digit: torch.Tensor) -> bytes:
    """A test digit as it is in the IDX file (uint8 (1, 28, 28), white on black) saved as a 28x28 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(digit.reshape(28, 28).numpy()).save(buffer, "PNG")
    return buffer.getvalue()


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


@pytest.mark.parametrize("vertical", [False, True])
def test_strip_of_40_digits_is_refused_not_answered_as_one_digit(served_model, mnist_dir, vertical):
    """A 1448x40 PNG of test digits 160-199 side by side, black on white (and the same one above another, 40x1448),
    was answered 200 with one digit; the reader now sees its 40 marks (or its several lines) and it is a 422."""
    images, _ = load_split(mnist_dir, "test")
    pad = ((4, 4), (6, 6)) if vertical else ((6, 6), (4, 4))
    cells = np.concatenate([np.pad(images[k, 0].numpy(), pad) for k in range(160, 200)], 0 if vertical else 1)
    buffer = io.BytesIO()
    Image.fromarray(255 - np.pad(cells, ((4, 4), (0, 0)) if vertical else ((0, 0), (4, 4)))).save(buffer, "PNG")
    status, result = http("POST", f"{served_model['url']}/predict", buffer.getvalue(), {"Content-Type": "image/png"})
    reason = "marks on several lines" if vertical else "40 separate marks, more than the 10 digits of a number"
    assert status == 422 and set(result) == {"error"} and reason in result["error"], result


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer(served_model, mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    # 28x28 test digits as PNG (read on the event loop) and users' drawings (read in worker threads), mixed
    pictures = [as_png(images[k]) for k in range(40)] + [user_drawing_png(images[k]) for k in range(40, 48)]
    url = f"{served_model['url']}/predict"

    def post(png: bytes) -> tuple[int, dict]:
        while True:  # as a client should: 503 (more than --max_concurrent + --max_waiting in) means retry
            status, answer = http("POST", url, png, {"Content-Type": "image/png"})
            if status != 503:
                return status, answer
            time.sleep(0.05)

    def counts() -> tuple[int, int]:
        _, health = http("GET", f"{served_model['url']}/health")
        return health["pictures_scored"], health["forward_passes"]

    start = counts()
    alone = [post(png) for png in pictures]
    middle = counts()
    with ThreadPoolExecutor(len(pictures)) as clients:  # every picture sent at once
        together = list(clients.map(post, pictures))
    end = counts()
    scored_alone, passes_alone = middle[0] - start[0], middle[1] - start[1]
    scored, passes = end[0] - middle[0], end[1] - middle[1]
    assert passes_alone == scored_alone >= 45  # one at a time: a pass each
    assert scored == scored_alone and passes < scored, f"{scored} pictures in {passes} passes: none shared a pass"
    for (status, answer), (status_alone, answer_alone) in zip(together, alone, strict=True):
        assert status == status_alone
        if status == 200:
            assert answer["digits"] == answer_alone["digits"] and answer["boxes"] == answer_alone["boxes"]
            assert answer["digit_confidences"] == pytest.approx(answer_alone["digit_confidences"], abs=1e-5)
    right = sum(status == 200 and answer["digit"] == int(labels[k]) for k, (status, answer) in enumerate(together))
    assert right >= 45, f"only {right} of 48 real test digits read right under concurrency"


# ---------------------------------------------------------------- the command line, before any model is loaded


def serve_error(tmp_path, capsys, monkeypatch, *args: str) -> list[str]:
    """Run ``serve ARGS`` in this process from ``tmp_path``; it must exit 2. Returns its stderr lines."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("port", ["99999", "65536", "-5"])
def test_port_outside_the_range_is_one_line(tmp_path, capsys, monkeypatch, port):
    err = serve_error(tmp_path, capsys, monkeypatch, "--ckpt_path", "none.ckpt", "--port", port)
    assert err == [f"error: --port must be 0-65535, got {port}"]


def test_port_in_use_is_refused_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    """A real listening socket holds the port; the checkpoint does not exist, so a later check would name it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = serve_error(tmp_path, capsys, monkeypatch, "--ckpt_path", "none.ckpt", "--port", str(port))
    assert err == [f"error: 127.0.0.1:{port} is in use; choose another --port"]


def test_host_that_cannot_be_resolved_or_bound_is_one_line(tmp_path, capsys, monkeypatch):
    err = serve_error(tmp_path, capsys, monkeypatch, "--ckpt_path", "none.ckpt", "--host", "no-such-host.invalid")
    assert len(err) == 1 and err[0].startswith("error: --host no-such-host.invalid: cannot be resolved (")
    err = serve_error(tmp_path, capsys, monkeypatch, "--ckpt_path", "none.ckpt", "--host", "192.0.2.1")  # TEST-NET-1
    assert err == [
        "error: 192.0.2.1:8000 cannot be bound (Cannot assign requested address); give an address of this machine "
        "as --host"
    ]


def test_usage_error_is_usage_then_one_error_line(tmp_path, capsys, monkeypatch):
    err = serve_error(tmp_path, capsys, monkeypatch)
    assert err[0].startswith("usage: python -m mnist_lit serve ")
    assert [line for line in err if not line.startswith(" ")] == [
        err[0],
        "error: the following arguments are required: --ckpt_path (python -m mnist_lit serve --help lists the options)",
    ]


def test_best_without_a_run_is_refused_naming_the_folder(tmp_path, capsys, monkeypatch):
    err = serve_error(tmp_path, capsys, monkeypatch, "--ckpt_path", "best")
    assert err == [
        "error: --ckpt_path best: no best checkpoint found in lightning_logs/ (no version_N folders); train first "
        "(fit) or give the path of a .ckpt file"
    ]


@pytest.mark.slow
def test_serve_refusals_in_a_real_process_are_one_line(tmp_path):
    """`python -m mnist_lit serve` as a user runs it: a port out of range, then one in use: no traceback, exit 2."""
    (tmp_path / "unread.ckpt").write_bytes(b"")  # the port is refused before the checkpoint is read
    out = run_cli("serve", "--ckpt_path", "unread.ckpt", "--port", "99999", cwd=tmp_path, check=False)
    assert (out.returncode, out.stdout, out.stderr.strip()) == (2, "", "error: --port must be 0-65535, got 99999")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("serve", "--ckpt_path", "unread.ckpt", "--port", str(port), cwd=tmp_path, check=False)
    assert out.returncode == 2 and out.stderr.strip() == f"error: 127.0.0.1:{port} is in use; choose another --port"


def test_serve_best_serves_the_newest_runs_best_checkpoint(trained_run, tmp_path):
    """`serve --ckpt_path best` in a folder holding a copy of the trained run: its best checkpoint, named on stderr."""
    shutil.copytree(trained_run["run_dir"], tmp_path / "lightning_logs" / "version_0")
    best = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / trained_run["best_ckpt"].name
    with serve("best", tmp_path) as server:
        assert server["health"]["checkpoint"] == str(best.resolve())
        log = server["log"].read_text()
    assert f"Using checkpoint {best.relative_to(tmp_path)}" in log.splitlines()


# ---------------------------------------------------------------- clients that stall


def stalled_upload(url: str, declared: int) -> socket.socket:
    """A raw connection that sends a POST /predict's headers declaring ``declared`` body bytes, 4 of them, then waits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\nContent-Length: {declared}\r\n\r\n".encode()
        + b"\x89PNG"
    )
    return sock


def reply_of(sock: socket.socket) -> str:
    """Everything the server sends on ``sock`` until it closes the connection."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def test_bodies_that_stop_arriving_are_answered_408_and_free_their_place(served_model, test_digits):
    stalled = [stalled_upload(served_model["url"], 5000) for _ in range(10)]  # the gate's 2 + 8 places, all held
    try:
        time.sleep(1)
        status, answer = http(
            "POST", f"{served_model['url']}/predict", test_digits[4][1], {"Content-Type": "image/png"}
        )
        assert status == 503 and "server busy" in answer["error"]
        started = time.monotonic()
        replies = [reply_of(sock) for sock in stalled]  # within BODY_IDLE_SECONDS (15 s)
        assert time.monotonic() - started < BODY_IDLE_SECONDS + 10
        assert all(
            reply.startswith("HTTP/1.1 408 ") and "no part of the request body arrived" in reply for reply in replies
        )
    finally:
        for sock in stalled:
            sock.close()
    status, answer = http("POST", f"{served_model['url']}/predict", test_digits[4][1], {"Content-Type": "image/png"})
    assert status == 200 and answer["digit"] == 4


def test_sigterm_stops_the_server_while_a_client_is_still_sending(trained_run, tmp_path):
    with serve(trained_run["best_ckpt"], tmp_path) as server:
        stalled = stalled_upload(server["url"], 5000)
        time.sleep(1)
        started = time.monotonic()
        server["proc"].terminate()
        server["proc"].wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + 15)
        assert time.monotonic() - started < GRACEFUL_SHUTDOWN_SECONDS + 15
        stalled.close()
    assert "Traceback" not in server["log"].read_text()
