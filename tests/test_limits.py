"""Hostile input and faults, tried as an attacker or an unlucky user would: memory, time and output stay bounded.

Memory is measured on real processes (wait4's peak RSS, tests/measure.py); servers run on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import shutil
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIG, offline_data, printed_test_acc, run_cli
from measure import run_measured

from mnist_lit.data import read_idx
from mnist_lit.errors import DataError
from mnist_lit.limits import (
    DOWNLOAD_DEADLINE,
    DOWNLOAD_TIMEOUT,
    MAX_CONCURRENT_PREDICTIONS,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_NODES,
    MAX_IDX_ITEMS,
    MAX_WAITING_PREDICTIONS,
)
from mnist_lit.runs import data_settings

#: Peak RSS allowed to any CLI process refusing hostile input (the issue's bound), MiB.
MAX_PEAK_MIB = 1200
BOMB_BYTES = 2**30  # 1 GiB of zeros, inflated from about 1 MB


def fit_args(data_dir: Path, *more: str) -> list[str]:
    return ["fit", "--config", str(CONFIG), "--data.data_dir", str(data_dir), *more]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_gzip(path: Path, header: bytes, zeros: int) -> Path:
    """``header`` followed by ``zeros`` zero bytes, gzip-compressed while written (the test holds 1 MiB at a time)."""
    chunk = bytes(2**20)
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(header)
        for _ in range(zeros // len(chunk)):
            handle.write(chunk)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A ~1 MB gzip file that inflates to 1 GiB of zeros."""
    return write_gzip(tmp_path_factory.mktemp("bomb") / "bomb.gz", b"", BOMB_BYTES)


def data_dir_with(tmp_path: Path, mnist_dir: Path, stem: str, source: Path) -> Path:
    """A copy of the real subset with ``source`` in place of ``stem.gz``."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(mnist_dir / "MNIST" / "raw", raw)
    (raw / f"{stem}.gz").unlink()
    shutil.copyfile(source, raw / f"{stem}.gz")
    return tmp_path / "data"


# ---------------------------------------------------------------- IDX files


@pytest.mark.slow
def test_gzip_bomb_is_refused_from_its_first_bytes_in_the_memory_of_a_normal_start(bomb, tmp_path, mnist_dir):
    assert bomb.stat().st_size < 2 * 2**20
    data_dir = data_dir_with(tmp_path, mnist_dir, "train-images-idx3-ubyte", bomb)
    run = run_measured(*fit_args(data_dir, "--data.download", "false"), cwd=tmp_path)
    assert run.returncode == 2
    assert error_lines(run.stderr) == [
        f"error: {data_dir}/MNIST/raw/train-images-idx3-ubyte.gz: IDX magic number 0, "
        "expected 2051 for images; not an MNIST images file, replace it with the right one"
    ]
    # The same command refusing a folder without data: the memory every start takes (torch, Lightning).
    normal = run_measured(*fit_args(tmp_path / "empty", "--data.download", "false"), cwd=tmp_path)
    assert normal.returncode == 2 and "data not found" in error_lines(normal.stderr)[0]
    print(
        f"gzip bomb: peak RSS {run.peak_rss_mib:.0f} MiB, {run.seconds:.1f} s; "
        f"normal start: {normal.peak_rss_mib:.0f} MiB, {normal.seconds:.1f} s"
    )
    assert run.peak_rss_mib < MAX_PEAK_MIB and run.peak_rss_mib < normal.peak_rss_mib + 100, (
        run.peak_rss_mib,
        normal.peak_rss_mib,
    )
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*"))


@pytest.mark.slow
def test_bomb_behind_a_valid_header_stops_inflating_where_the_header_ends(tmp_path, mnist_dir):
    # 10,000 images announced (as many as the labels), then 1 GiB of zeros: the read stops 1 byte past 7,840,016.
    bomb = write_gzip(tmp_path / "valid_header.gz", struct.pack(">IIII", 2051, 10_000, 28, 28), BOMB_BYTES)
    data_dir = data_dir_with(tmp_path, mnist_dir, "train-images-idx3-ubyte", bomb)
    run = run_measured(*fit_args(data_dir, "--data.download", "false"), cwd=tmp_path)
    assert run.returncode == 2 and run.peak_rss_mib < MAX_PEAK_MIB
    assert error_lines(run.stderr) == [
        f"error: {data_dir}/MNIST/raw/train-images-idx3-ubyte.gz: more than the 7840016 bytes its header promises "
        "(10000 images); the file is damaged or not one IDX file, delete it and download or copy it again"
    ]


def test_header_over_the_item_limit_is_refused_before_inflating(tmp_path):
    path = write_gzip(tmp_path / "huge.gz", struct.pack(">IIII", 2051, 2**32 - 1, 28, 28), 2**20)
    with pytest.raises(DataError) as err:
        read_idx(path, 2051)
    assert str(err.value) == (
        f"{path}: the header announces 4,294,967,295 images, more than the limit of "
        f"{MAX_IDX_ITEMS:,}; not an MNIST file (or a damaged one), replace it"
    )


# ---------------------------------------------------------------- downloads


class Endless(BaseHTTPRequestHandler):
    """``/endless/NAME``: 200 and zeros until the client hangs up (no Content-Length);
    ``/huge/NAME``: Content-Length of 1 TB, then zeros."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path.startswith("/huge/"):
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        chunk = bytes(2**16)
        try:
            while True:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endless_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def silent_server():
    """A server on 127.0.0.1 that accepts connections and never answers; yields (port, times of the connections)."""
    connected, held = [], []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at teardown
                return
            connected.append(time.monotonic())
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], connected
    finally:
        listener.close()
        for conn in held:
            conn.close()


NO_PROXY = {"http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "no_proxy": "127.0.0.1"}


@pytest.mark.slow
def test_endless_body_is_cut_at_the_known_size(endless_server, tmp_path):
    mirrors = f"[{endless_server}/endless/, {endless_server}/huge/]"
    run = run_measured(*fit_args(tmp_path / "data", "--data.mirrors", mirrors), cwd=tmp_path, env=NO_PROXY)
    print(f"endless mirror: peak RSS {run.peak_rss_mib:.0f} MiB, {run.seconds:.1f} s")
    assert run.returncode == 2 and run.peak_rss_mib < MAX_PEAK_MIB, run.peak_rss_mib
    assert run.seconds < DOWNLOAD_DEADLINE + 30  # 30 s: starting Python, torch and Lightning on a busy machine
    [line] = error_lines(run.stderr)
    assert line.startswith(
        "error: could not download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz ("
    )
    assert f"{endless_server}/endless/: more than the 9,912,422 bytes of the file sent; stopped reading, " in line
    assert f"{endless_server}/huge/: 1,000,000,000,000 bytes announced, more than the 9,912,422 of the file" in line
    assert not list((tmp_path / "data" / "MNIST" / "raw").iterdir())  # nothing half-written


@pytest.mark.slow
def test_mirrors_that_never_answer_fail_in_under_a_minute_with_default_settings(silent_server, tmp_path):
    port, connected = silent_server
    mirrors = f"[http://127.0.0.1:{port}/a/, http://127.0.0.1:{port}/b/, http://127.0.0.1:{port}/c/]"
    run = run_measured(*fit_args(tmp_path / "data", "--data.mirrors", mirrors), cwd=tmp_path, env=NO_PROXY, timeout=300)
    ended = time.monotonic()
    downloading = ended - connected[0]  # from the first connection: without Python's and torch's start
    print(f"silent mirrors: {downloading:.1f} s from the first connection, {run.seconds:.1f} s in all")
    assert run.returncode == 2 and DOWNLOAD_DEADLINE - 1 < downloading < 60
    [line] = error_lines(run.stderr)
    assert f"http://127.0.0.1:{port}/a/: timed out (no answer within {DOWNLOAD_TIMEOUT:g} s)" in line
    assert f"stopped at the deadline of {DOWNLOAD_DEADLINE:g} s (--data.download_deadline)" in line
    # Each unreachable mirror is asked once, not once per file (4 files), and none after the deadline:
    # the first two mirrors' 20 s timeouts fill the 40 s, the third is not asked.
    assert len(connected) == 2 and run.stderr.count("Download failed:") == 2


@pytest.mark.slow
def test_offline_says_in_a_few_lines_where_the_files_go_and_the_command_that_uses_them(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    mirrors = f"[https://mnist-lit-test.invalid/mnist/, http://127.0.0.1:{closed}/mnist/]"
    run = run_measured(*fit_args(tmp_path / "data", "--data.mirrors", mirrors), cwd=tmp_path, env=NO_PROXY)
    assert run.returncode == 2 and run.seconds < 60
    download_lines = [line for line in run.stderr.splitlines() if "Download" in line or line.startswith("error:")]
    assert len(download_lines) <= 5, download_lines
    [line] = error_lines(run.stderr)
    assert "https://mnist-lit-test.invalid/mnist/: host not found" in line
    assert f"http://127.0.0.1:{closed}/mnist/: connection refused" in line
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert line.endswith(f"in {raw}/ and run with --data.data_dir {tmp_path / 'data'} --data.download false")
    assert len(line) < 700, len(line)


# ---------------------------------------------------------------- serve


def big_rgba_png(digit) -> bytes:
    """A real test digit as a 24-megapixel (6000x4000) RGBA photo: black ink on opaque white, PNG."""
    from PIL import Image, ImageOps

    small = Image.frombytes("L", (28, 28), bytes(digit.reshape(28, 28).flatten().tolist()))
    ink = ImageOps.invert(small.resize((3000, 3000), Image.Resampling.BICUBIC))
    canvas = Image.new("L", (6000, 4000), 255)
    canvas.paste(ink, (1500, 500))
    buffer = io.BytesIO()
    canvas.convert("RGBA").save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_picture(mnist_dir) -> tuple[int, bytes]:
    from mnist_lit.data import load_split

    images, labels = load_split(mnist_dir, "test")
    return int(labels[0]), big_rgba_png(images[0])


@pytest.mark.slow
def test_serve_burst_of_24_megapixel_uploads_stays_bounded(trained_run, big_picture, tmp_path):
    from measure import peak_rss_mib, rss_mib
    from serving import http, serve

    label, body = big_picture
    assert len(body) < 5_000_000  # under the body limit: only the pixels make it heavy
    with serve(trained_run["best_ckpt"], tmp_path) as server:
        pid, url = server["proc"].pid, server["url"]
        assert server["health"]["max_concurrent"] == MAX_CONCURRENT_PREDICTIONS
        assert server["health"]["max_waiting"] == MAX_WAITING_PREDICTIONS
        start_rss = rss_mib(pid)
        answers, health, busy = [], [], threading.Event()

        def upload() -> None:
            answers.append(http("POST", f"{url}/predict", body, {"Content-Type": "image/png"}, timeout=300))

        def probe() -> None:  # /health while the uploads are in flight
            while busy.is_set():
                started = time.monotonic()
                status, payload = http("GET", f"{url}/health", timeout=30)
                health.append((status, payload.get("ok"), time.monotonic() - started))
                time.sleep(0.5)

        uploads = [threading.Thread(target=upload) for _ in range(12)]
        busy.set()
        prober = threading.Thread(target=probe)
        for thread in uploads:
            thread.start()
        prober.start()
        for thread in uploads:
            thread.join(timeout=600)
        busy.clear()
        prober.join(timeout=60)
        peak = peak_rss_mib(pid)
        time.sleep(1)
        end_rss = rss_mib(pid)

    print(
        f"serve burst: RSS {start_rss:.0f} MiB at start, peak {peak:.0f}, {end_rss:.0f} after; statuses "
        f"{sorted(status for status, _ in answers)}; slowest /health {max(h[2] for h in health):.2f} s"
    )
    assert len(answers) == 12
    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {200, 503}, answers
    for status, payload in answers:
        if status == 200:
            assert payload["digit"] == label
        else:
            assert payload["error"].startswith("server busy: ")
    # 2 decoding + 8 waiting are admitted; the two beyond them are refused at once.
    assert statuses.count(200) >= MAX_CONCURRENT_PREDICTIONS + MAX_WAITING_PREDICTIONS
    assert len(health) >= 3 and all(status == 200 and ok for status, ok, _ in health), health
    assert peak < 2048, (start_rss, peak, end_rss)
    assert end_rss < start_rss + 300, (start_rss, peak, end_rss)


@pytest.mark.slow
def test_serve_pixel_limit_is_configurable_and_answered_413(trained_run, big_picture, tmp_path):
    from serving import http, serve

    _, body = big_picture
    with serve(
        trained_run["best_ckpt"],
        tmp_path,
        "--max_image_pixels",
        "20000000",
        "--max_concurrent",
        "1",
        "--max_waiting",
        "0",
    ) as server:
        assert server["health"]["max_image_pixels"] == 20_000_000
        status, payload = http("POST", f"{server['url']}/predict", body, {"Content-Type": "image/png"})
        assert status == 413
        assert payload["error"] == (
            "request body: the header claims 6000x4000 = 24,000,000 pixels, more than the "
            "limit of 20,000,000; not decoded, shrink the picture first"
        )
        status, health = http("GET", f"{server['url']}/health")
        assert status == 200 and health["ok"]


# ---------------------------------------------------------------- command line


def billion_laughs(path: Path) -> Path:
    """Nine levels of nine aliases to the level below: 9^9 = 387 million strings from 0.5 kB."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path.write_text("\n".join(lines) + "\ntrainer:\n  max_epochs: *a9\n")
    return path


def test_no_command_lists_all_nine(tmp_path):
    out = run_cli(cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        "error: no command given; choose one of fit, validate, test, predict, cv, lr_find, tune, export, serve"
    ]
    listed = [line.split()[0] for line in out.stderr.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", "cv", "lr_find", "tune", "export", "serve"]


@pytest.mark.slow
def test_config_before_the_command_is_read_as_after_it(tmp_path):
    out = run_cli("--config", str(CONFIG), "fit", "--trainer.max_epochs", "3", "--print_config", cwd=tmp_path)
    config = yaml.safe_load(out.stdout)
    assert (
        config["trainer"]["max_epochs"] == 3 and data_settings(config)["val_split"] == 0.3
    )  # the file's, then the flag
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "."
    # An extra command the same way: cv reads the config (and then finds no data there).
    cv = run_cli(
        "--config",
        str(CONFIG),
        "cv",
        "--folds",
        "2",
        "--data.data_dir",
        str(tmp_path / "nowhere"),
        "--data.download",
        "false",
        cwd=tmp_path,
        check=False,
    )
    assert cv.returncode == 2
    [line] = error_lines(cv.stderr)
    assert line.startswith("error: mnist data not found: put ")


@pytest.mark.slow
def test_hostile_yaml_fails_fast_in_one_line(tmp_path):
    laughs = billion_laughs(tmp_path / "laughs.yaml")
    assert laughs.stat().st_size < 1300
    for args in (["fit", "--config", str(laughs)], ["--config", str(laughs), "fit"]):
        run = run_measured(*args, cwd=tmp_path, timeout=120)
        assert run.returncode == 2 and run.seconds < 60 and run.peak_rss_mib < MAX_PEAK_MIB
        assert error_lines(run.stderr) == [
            f"error: {laughs} expands to more than {MAX_CONFIG_NODES:,} values through YAML aliases (*name); "
            "refused before expanding it (a 'billion laughs' attack?)"
        ]
    # The same bomb as a YAML value on the command line goes through jsonargparse's loader, also limited.
    inline = (
        "{a: &a [x, x, x, x, x, x, x, x, x], "
        + ", ".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8))
        + "}"
    )
    run = run_measured("fit", "--config", str(CONFIG), "--trainer.plugins", inline, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.seconds < 60 and run.peak_rss_mib < MAX_PEAK_MIB
    assert "expands to more than 100,000 values through YAML aliases" in run.stderr
    assert "Traceback" not in run.stderr and len(error_lines(run.stderr)) == 1
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    out = run_cli("fit", "--config", str(big), cwd=tmp_path, check=False)
    assert out.returncode == 2 and error_lines(out.stderr) == [
        f"error: {big} has 2,000,000 bytes, more than the limit of {MAX_CONFIG_BYTES:,} for a configuration"
    ]


def test_kaggle_file_names_are_found_and_nothing_is_downloaded(tmp_path, mnist_dir):
    from mnist_lit.data import MNISTDataModule, load_split

    data_dir = tmp_path / "kaggle"
    data_dir.mkdir()
    for path in (mnist_dir / "MNIST" / "raw").glob("*.gz"):  # Kaggle ships them uncompressed, with a dot
        name = path.name.removesuffix(".gz").replace("-idx", ".idx")
        (data_dir / name).write_bytes(gzip.decompress(path.read_bytes()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    dm = MNISTDataModule(data_dir=str(data_dir), download=True, mirrors=[closed])
    dm.prepare_data()  # a download attempt would fail: the mirror is a closed port
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "t10k-images.idx3-ubyte",
        "t10k-labels.idx1-ubyte",
        "train-images.idx3-ubyte",
        "train-labels.idx1-ubyte",
    ]
    images, labels = load_split(data_dir, "train")
    expected_images, expected_labels = load_split(mnist_dir, "train")
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    # Kaggle's archive also has each file in a folder of its own name; a wrong name is named in the message.
    nested = tmp_path / "nested"
    for path in data_dir.iterdir():
        name = path.name.replace(".idx", "-idx")
        (nested / name).mkdir(parents=True)
        (nested / name / name).write_bytes(path.read_bytes())
    assert load_split(nested, "test")[1][:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.equal(load_split(nested, "train")[0], expected_images)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte", "train-labels.idx1-ubyte"):
        shutil.copyfile(data_dir / name, wrong / name)
    (wrong / "train-images-idx3.ubyte").write_bytes((data_dir / "train-images.idx3-ubyte").read_bytes())
    with pytest.raises(DataError) as err:
        load_split(wrong, "train")
    assert str(err.value).endswith(
        f"in {wrong / 'MNIST' / 'raw'}/ (found only t10k-images.idx3-ubyte, t10k-labels.idx1-ubyte, "
        "train-images-idx3.ubyte, train-labels.idx1-ubyte) or set --data.download true"
    )


@pytest.mark.slow
def test_export_to_a_folder_is_one_line(trained_run, tmp_path):
    out = run_cli(
        "export",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--format",
        "onnx",
        "--output",
        str(tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        f"error: --output {tmp_path} is a folder; give the file to write, e.g. {tmp_path / 'model.onnx'}"
    ]


@pytest.mark.slow
def test_precision_64_true_trains_and_16_true_is_one_line(tmp_path, mnist_dir):
    short = [
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "20",
        "--trainer.limit_val_batches",
        "2",
    ]
    refused = run_cli(
        *fit_args(tmp_path, *short[2:]),
        "--data.data_dir",
        str(mnist_dir),
        "--trainer.precision",
        "16-true",
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 2 and error_lines(refused.stderr) == [
        "error: --trainer.precision 16-true is not supported: with float16 weights and no loss scaling the loss "
        "turns NaN within a few steps; use 32-true (the default), 64-true, bf16-true, bf16-mixed or 16-mixed"
    ]
    double = run_cli("fit", "--config", str(CONFIG), *short, "--trainer.precision", "64-true", cwd=tmp_path)
    assert "Traceback" not in double.stderr
    assert printed_test_acc(double.stdout) >= 0.80  # 20 steps of 128 real images, as bf16-mixed in test_cli; chance 0.1


@pytest.mark.slow
def test_messages_users_cannot_act_on_are_not_printed(tmp_path, mnist_dir):
    short = [
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
    ]
    fit = run_cli("fit", *short, "--trainer.max_epochs", "1", cwd=tmp_path, merged=True)
    resumed = run_cli("fit", *short, "--trainer.max_epochs", "2", "--ckpt_path", "last", cwd=tmp_path, merged=True)
    assert "Resuming" in resumed.stdout and "Test accuracy:" in resumed.stdout
    lr_find = run_cli("lr_find", *short[:6], "--num_training", "20", cwd=tmp_path, merged=True)
    assert "Suggested learning rate:" in lr_find.stdout
    for output in (fit.stdout, resumed.stdout, lr_find.stdout):
        assert "litlogger" not in output and "multiple `ModelCheckpoint`" not in output
        assert "`weights_only` was not set" not in output and "exists and is not empty" not in output
        assert "Traceback" not in output


def test_config_that_is_not_yaml_is_one_line_naming_where(tmp_path):
    """A --config file PyYAML cannot read: its first problem and where, before Lightning is imported."""
    (tmp_path / "bad.yaml").write_text("trainer: [unclosed\n")
    (tmp_path / "binary.yaml").write_bytes(bytes([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0]) + bytes(56))
    (tmp_path / "latin1.yaml").write_bytes("trainer:\n  max_epochs: 1\n# caf\xe9\n".encode("latin-1"))
    expected = {
        "bad.yaml": "error: --config bad.yaml: not valid YAML (line 2, column 1: did not find expected ',' or ']')",
        "binary.yaml": "error: --config binary.yaml: not valid YAML (position 0: unacceptable character #x007f: "
        "control characters are not allowed)",
        "latin1.yaml": "error: --config latin1.yaml: not valid YAML (position 30: 'utf-8' codec can't decode byte "
        "#xe9: invalid continuation byte)",
    }
    for name, line in expected.items():
        for args in (["fit", "--config", name], ["--config", name, "test"]):
            out = run_cli(*args, cwd=tmp_path, check=False)
            assert out.returncode == 2 and out.stderr.splitlines() == [line], (args, out.stderr[-2000:])
    assert not (tmp_path / "lightning_logs").exists()


def test_an_int_beyond_64_bits_is_one_line_naming_where(tmp_path):
    """An int beyond 2**63 - 1: jsonargparse's float() of it for a float option raised OverflowError (a traceback,
    from the command line or a file, also for a class's own option, ``--data.val_split``); of more than 4,300 digits
    (Python's limit on reading an int), PyYAML's ValueError was a traceback and the command line's a raw
    "Exceeds the limit" line. Refused before Lightning, whichever way the int is written."""
    big, huge = "1" + "0" * 400, "1" * 5001
    (tmp_path / "huge.yaml").write_text(f"trainer:\n  max_epochs: {huge}\n")
    (tmp_path / "hex.yaml").write_text("model:\n  lr: 0x" + "f" * 30 + "\n")
    beyond = "beyond the 64-bit integers settings take (at most 9,223,372,036,854,775,807); give a smaller number"
    for args, line in (
        (
            ["fit", "--config", "huge.yaml"],
            f"error: huge.yaml has the number 1111111111...1111 (5,001 characters), {beyond}",
        ),
        (
            ["fit", "--config", str(CONFIG), "--config", "hex.yaml"],
            f"error: hex.yaml has the number 0xffffffff...ffff (32 characters), {beyond}",
        ),
        (
            ["fit", "--config", str(CONFIG), "--trainer.max_epochs", huge],
            f"error: the value of --trainer.max_epochs has the number 1111111111...1111 (5,001 characters), {beyond}",
        ),
        (
            ["fit", "--config", str(CONFIG), f"--model.lr={big}"],
            f"error: the value of --model.lr has the number 1000000000...0000 (401 characters), {beyond}",
        ),
        (
            ["fit", "--config", str(CONFIG), "--data.val_split", big],
            f"error: the value of --data.val_split has the number 1000000000...0000 (401 characters), {beyond}",
        ),
        (
            ["fit", "--config", str(CONFIG), "--trainer.limit_train_batches", "-" + "9" * 20],
            f"error: the value of --trainer.limit_train_batches has the number -99999999999999999999 (21 characters), {beyond}",
        ),
    ):
        out = run_cli(*args, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines() == [line], (args, out.stderr[-2000:])
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_worker_count_and_batch_size_beyond_their_bounds_are_one_line_before_a_run_folder(tmp_path, mnist_dir):
    """``--data.num_workers 40000`` forked DataLoader workers until memory ran out (here without data files, so that
    code without the bound stops at the missing files instead of forking); ``--data.batch_size 10**18`` trained (a
    number past sys.maxsize: an islice traceback). Now one line each, exit 2, before a run folder."""
    from mnist_lit.limits import MAX_BATCH_SIZE, max_num_workers

    bound = max_num_workers()
    for flag, value, data in (
        ("--data.num_workers", "40000", tmp_path / "no_data"),
        ("--data.num_workers", str(10**18), tmp_path / "no_data"),
        ("--data.batch_size", str(10**18), mnist_dir),
    ):
        args = [*offline_data(data), flag, value, "--trainer.fast_dev_run", "true"]
        out = run_cli("fit", "--config", str(CONFIG), *args, cwd=tmp_path, check=False)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and "Traceback" not in out.stderr, (flag, value, out.stderr[-2000:])
        assert errors == [out.stderr.splitlines()[-1]] and errors[0].startswith(f"error: {flag} {value} is more than ")
        assert (f"give 0 to {bound}" if "workers" in flag else f"give 1 to {MAX_BATCH_SIZE:,}") in errors[0]
    assert not (tmp_path / "lightning_logs").exists()
