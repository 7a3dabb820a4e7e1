"""Downloads against a real HTTP server on 127.0.0.1 whose mirrors fail in every way a real one can."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from mnist_lit.data import MNISTDataModule, load_split, read_idx
from mnist_lit.data.download import download_files
from mnist_lit.errors import DataError, DownloadError

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # official: torchvision's md5s apply
SLOW_SECONDS = 1.5  # the /slow/ mirror answers after this; the tests' timeout is shorter


class Mirrors(BaseHTTPRequestHandler):
    """``/MODE/NAME``: ``good`` serves the real file; ``forbidden`` 403; ``truncated`` half the bytes under
    the full Content-Length; ``html`` a captive-portal page; ``slow`` the real file too late."""

    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if body is None or mode == "forbidden":
            self.send_error(404 if body is None else 403)
            return
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
        if mode == "html":
            page = b"<!DOCTYPE html><html><body>Please log in to the network</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up first (/slow/)
            self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server(mnist_dir):
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) with the real files; yields its base URL."""
    Mirrors.files = {p.name: p.read_bytes() for p in (mnist_dir / "MNIST" / "raw").glob("*.gz")}
    Mirrors.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Mirrors)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_403_truncated_html_then_the_right_file(server, tmp_path, mnist_dir, caplog):
    caplog.set_level(logging.INFO, logger="mnist_lit")
    mirrors = [f"{server}/{mode}/" for mode in ("forbidden", "truncated", "html", "good")]
    dm = MNISTDataModule(data_dir=str(tmp_path), mirrors=mirrors, download_timeout=5)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):  # only the test files are missing
        (raw / name).write_bytes((mnist_dir / "MNIST" / "raw" / name).read_bytes())
    dm.prepare_data()

    # Each missing file was tried on every mirror in turn; nothing else was asked for.
    assert Mirrors.requests == [
        f"/{mode}/{name}" for name in TEST_FILES for mode in ("forbidden", "truncated", "html", "good")
    ]
    # The files on disk are the verified originals, and no temporary file is left behind.
    for name in TEST_FILES:
        assert (raw / name).read_bytes() == (mnist_dir / "MNIST" / "raw" / name).read_bytes()
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [*TEST_FILES, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    )
    images, labels = load_split(tmp_path, "test")
    assert images.shape == (10_000, 1, 28, 28) and labels[:5].tolist() == [7, 2, 1, 0, 4]

    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    name = TEST_FILES[0]
    assert f"Download failed: {server}/forbidden/{name}: HTTP 403 Forbidden; trying the next mirror" in failures
    size = len(Mirrors.files[name])
    assert (
        f"Download failed: {server}/truncated/{name}: truncated: {size // 2} of {size} bytes arrived; "
        "trying the next mirror" in failures
    )
    assert (
        f"Download failed: {server}/html/{name}: an HTML page instead of data (Content-Type text/html); "
        "trying the next mirror" in failures
    )
    assert len(failures) == 6  # three bad mirrors x two files


def test_refused_tls_and_timeout_move_on(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mnist_lit")
    port = server.rsplit(":", 1)[1]
    mirrors = [
        f"http://127.0.0.1:{closed_port()}/",
        f"https://127.0.0.1:{port}/good/",
        f"{server}/slow/",
        f"{server}/good/",
    ]
    started = time.monotonic()
    paths = download_files(tmp_path, [(TEST_FILES[1], "ec29112dd5afa0611ce80d1b7f02629c")], mirrors, timeout=0.5)
    assert time.monotonic() - started < 10
    assert paths == [tmp_path / TEST_FILES[1]]
    assert torch.equal(read_idx(paths[0], 2049)[:5], torch.tensor([7, 2, 1, 0, 4], dtype=torch.uint8))
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 3
    assert failures[0].startswith(f"Download failed: {mirrors[0]}{TEST_FILES[1]}: connection refused")
    assert failures[1].startswith(f"Download failed: {mirrors[1]}{TEST_FILES[1]}: TLS error:")
    assert failures[2].startswith(f"Download failed: {mirrors[2]}{TEST_FILES[1]}: timed out (no answer within 0.5 s)")


def test_wrong_md5_is_refused_and_the_target_left_alone(server, tmp_path):
    target = tmp_path / TEST_FILES[1]
    with pytest.raises(DownloadError) as err:
        download_files(tmp_path, [(TEST_FILES[1], "0" * 32)], [f"{server}/good/"], timeout=5)
    assert f"{server}/good/: md5 ec29112dd5afa0611ce80d1b7f02629c of 4542 bytes, expected {'0' * 32}" in str(err.value)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_all_mirrors_fail_lists_urls_and_files_to_place_by_hand(server, tmp_path):
    mirrors = [f"{server}/forbidden/", f"{server}/html/"]
    dm = MNISTDataModule(data_dir=str(tmp_path), mirrors=mirrors, download_timeout=5)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert isinstance(err.value, DownloadError) and "\n" not in message
    # One reason per mirror (the same for all four files), then where the files go and the command that uses them.
    assert message.startswith(
        "could not download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"{TEST_FILES[0]}, {TEST_FILES[1]} ({server}/forbidden/: HTTP 403 Forbidden; "
        f"{server}/html/: an HTML page instead of data (Content-Type text/html)). "
    )
    assert message.endswith(
        f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, {TEST_FILES[0]}, "
        f"{TEST_FILES[1]} (gzip or not) in {tmp_path / 'MNIST' / 'raw'}/ and run with "
        f"--data.data_dir {tmp_path} --data.download false"
    )
    assert not list((tmp_path / "MNIST" / "raw").iterdir())  # nothing half-written


def test_a_non_idx_body_with_the_right_length_is_refused(server, tmp_path):
    # The server's real images file under the labels name: complete, not HTML, but the wrong IDX type.
    Mirrors.files["t10k-labels-idx1-ubyte.gz"] = Mirrors.files["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(DownloadError, match=r"not a valid file: .*IDX magic number 2051"):
        download_files(
            tmp_path,
            [(TEST_FILES[1], None)],
            [f"{server}/good/"],
            timeout=5,
            verify=lambda data, name: read_idx_bytes(data, name),
        )
    assert not list(tmp_path.iterdir())


def read_idx_bytes(data: bytes, name: str):
    from mnist_lit.data import decode_idx, magic_for

    return decode_idx(Path(name), data, magic_for(name))
