"""``python -m mnist_lit serve`` under load: concurrent clients posting real test digits as PNGs.

    python benchmarks/bench_serve.py [--ckpt-path CKPT] [--clients 1 8 32] [--seconds 10] [-- SERVER FLAGS]

Starts ``python -m mnist_lit serve`` on 127.0.0.1 (with ``--ckpt-path``, or a checkpoint it trains first:
configs/mnist.yaml, 1 epoch), then for each number of clients keeps that many HTTP/1.1 keep-alive
connections busy for ``--seconds`` (aiohttp, one asyncio loop: the client takes as little CPU from the
server as Python allows; both share the machine, and the client's CPU time is printed). Each request
posts one of the official MNIST test digits (from the IDX test file) as a 28x28 PNG, raw body (``--picture
canvas``: enlarged to 280x280 as the page's drawing area sends a drawing). Prints
requests/s (answers 200 only), p50 and p99 latency, 503 answers (server busy: more requests than
``--max_concurrent`` + ``--max_waiting``), 422 answers (a real test digit refused as "not a digit": the
false refusals of mnist_lit.pictures.verdict), any other status, the share of answers whose ``digit`` is the test label, and the
server's peak RSS (VmHWM). Issue 20's target: >= 500 requests/s at 32 clients with p99 <= 100 ms on 2 cores.
Server flags after ``--`` are passed on (default: ``--max_waiting 32``, so 32 clients are all admitted).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image

from mnist_lit.data import load_split


def png_digits(data_dir: str, count: int, picture: str = "mnist") -> list[tuple[bytes, int]]:
    """The first ``count`` official test digits as (PNG bytes, label): ``mnist``, as they are (28x28 grayscale);
    ``canvas``, as the page's drawing area sends a drawing (280x280 RGBA PNG, white ink on black, the digit
    enlarged 10x bicubic)."""
    images, labels = load_split(data_dir, "test")
    out = []
    for pixels, label in zip(images[:count], labels[:count], strict=False):
        image = Image.fromarray(pixels[0].numpy(), mode="L")
        if picture == "canvas":
            image = image.resize((280, 280), Image.Resampling.BICUBIC).convert("RGBA")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        out.append((buffer.getvalue(), int(label)))
    return out


def train_checkpoint(data_dir: str, workdir: Path) -> Path:
    """A 1-epoch checkpoint of configs/mnist.yaml (about 0.95 test accuracy), trained in ``workdir``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_lit",
            "fit",
            "--config",
            str(REPO / "configs" / "mnist.yaml"),
            "--data.data_dir",
            data_dir,
            "--data.download",
            "false",
            "--trainer.max_epochs",
            "1",
            "--test_after_fit",
            "false",
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def start_server(ckpt: Path, workdir: Path, server_args: list[str]) -> tuple[subprocess.Popen, str]:
    """``python -m mnist_lit serve`` on a free loopback port, once GET /health answers; (process, base URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(workdir / "serve.log", "w")  # noqa: SIM115  (open while the server runs)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_lit",
            "serve",
            "--ckpt_path",
            str(ckpt),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *server_args,
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}:\n{(workdir / 'serve.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("serve did not answer /health within 180 s")


async def load(url: str, digits: list[tuple[bytes, int]], clients: int, seconds: float) -> dict:
    """``clients`` connections posting ``digits`` in turn for ``seconds``; latencies of 200s, statuses, accuracy."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    correct = 0
    end = time.perf_counter() + seconds

    async def client(session, offset: int) -> None:
        nonlocal correct
        i = offset
        while time.perf_counter() < end:
            body, label = digits[i % len(digits)]
            i += clients
            start = time.perf_counter()
            async with session.post(url + "/predict", data=body, headers={"Content-Type": "image/png"}) as response:
                answer = await response.json()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                latencies.append(time.perf_counter() - start)
                correct += answer.get("digit") == label

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "correct": correct, "elapsed": elapsed}


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of process ``pid``, MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def main() -> None:
    """Measure and print; see the module docstring."""
    argv = sys.argv[1:]
    server_args = argv[argv.index("--") + 1 :] if "--" in argv else ["--max_waiting", "32"]
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt-path", help="checkpoint to serve (default: train one, 1 epoch)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per number of clients")
    parser.add_argument("--images", type=int, default=1000, help="distinct test digits posted (default 1000)")
    parser.add_argument(
        "--picture",
        choices=["mnist", "canvas"],
        default="mnist",
        help="mnist: each test digit as a 28x28 PNG (default); canvas: as the page's 280x280 drawing area sends it",
    )
    args = parser.parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve())
    digits = png_digits(data_dir, args.images, args.picture)
    print(
        f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{len(digits)} test digits as PNG ({statistics.mean(len(b) for b, _ in digits):.0f} bytes on average); "
        f"server flags: {' '.join(server_args) or '(defaults)'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = Path(args.ckpt_path) if args.ckpt_path else train_checkpoint(data_dir, work)
        proc, url = start_server(ckpt.resolve(), work, server_args)
        try:
            asyncio.run(load(url, digits[:20], 2, 2.0))  # warm-up: first requests pay lazy imports and allocations
            print(
                f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'200':>7} {'503':>6} {'422':>6} "
                f"{'other':>6} {'right':>7}"
            )
            for clients in args.clients:
                result = asyncio.run(load(url, digits, clients, args.seconds))
                lat = sorted(result["latencies"])
                ok = result["statuses"].get(200, 0)
                other = sum(n for status, n in result["statuses"].items() if status not in (200, 422, 503))
                p50, p99 = (
                    (lat[len(lat) // 2] * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3)
                    if lat
                    else (float("nan"), float("nan"))
                )
                print(
                    f"{clients:>7} {ok / result['elapsed']:8.1f} {p50:8.1f} {p99:8.1f} {ok:7d} "
                    f"{result['statuses'].get(503, 0):6d} "
                    f"{result['statuses'].get(422, 0):6d} {other:6d} {result['correct'] / max(ok, 1):7.3f}",
                    flush=True,
                )
            print(
                f"server peak RSS (VmHWM): {peak_rss_mib(proc.pid):.0f} MiB; client CPU time "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime:.1f} s"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
