"""Helpers for the web-app tests: a real `python -m mnist_lit serve` subprocess on 127.0.0.1, HTTP calls, digit pictures."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from conftest import stop_process
from PIL import Image, ImageOps

#: Seconds the server may take to answer /health after start (imports torch and Lightning on a busy 2-core VM).
START_TIMEOUT = 120


def http(
    method: str, url: str, body: bytes | Iterable[bytes] | None = None, headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict]:
    """One HTTP request with urllib; returns (status, JSON body) for 2xx and 4xx/5xx answers alike.

    An iterable ``body`` is sent with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextmanager
def serve(ckpt_path: Path, workdir: Path, *args: str) -> Iterator[dict]:
    """Start `python -m mnist_lit serve` on a free port; yield {"url", "proc", "log"}; always stop it.

    The server is started with ``--port 0`` and the test talks to the port its "Serving ... on URL" line names,
    the one the system chose. Waits (at most :data:`START_TIMEOUT` s) until GET /health answers; fails with the
    server's log if the process exits or never answers.
    """
    log_path = workdir / f"serve_{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_lit",
                "serve",
                "--ckpt_path",
                str(ckpt_path),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *args,
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            printed = re.search(r"^Serving .* on (http://127\.0\.0\.1:(\d+))/ ", log_path.read_text(), re.MULTILINE)
            assert not (printed and printed.group(2) == "0"), "serve --port 0 printed port 0, not the port it serves on"
            url = url or (printed.group(1) if printed else None)
            try:
                if url is None:
                    raise ConnectionError("no port printed yet")
                status, health = http("GET", f"{url}/health", timeout=5)
                if status == 200 and health.get("ok"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"serve did not answer /health within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield {"url": url, "proc": proc, "log": log_path, "health": health}
    finally:
        stop_process(proc, timeout=20)


def first_of_each_digit(labels: torch.Tensor) -> list[int]:
    """Indices of the first test image of each digit 0-9, in digit order."""
    return [int((labels == digit).nonzero()[0]) for digit in range(10)]


def user_drawing_png(digit: torch.Tensor, scale: int = 8, margin: int = 40) -> bytes:
    """A real MNIST digit as a user's picture: enlarged ``scale`` times (bicubic), black ink on white
    paper, with ``margin`` px of paper around it, as PNG bytes.

    Args:
        digit: uint8 (1, 28, 28) or (28, 28), white on black, from the IDX file.
    """
    pixels = digit.reshape(28, 28)
    image = Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist()))
    image = ImageOps.invert(image.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC))
    image = ImageOps.expand(image, border=margin, fill=255)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
