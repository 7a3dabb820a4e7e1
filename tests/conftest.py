"""Shared fixtures: the real MNIST subset in ../shared and one CLI-trained run reused by many tests."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

REPO = Path(__file__).resolve().parents[1]
MNIST_10K = Path(os.environ.get("MNIST_10K", REPO.parent / "shared" / "data" / "mnist-10k")).resolve()
CONFIG = REPO / "configs" / "mnist.yaml"
# The options the CLI remembers between runs (mnist_lit.option_cache) go to a folder of this session's own, not
# the user's ~/.cache: the first CLI run writes them, and every later one is checked against them first.
os.environ["MNIST_LIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="mnist_lit_options_")
atexit.register(shutil.rmtree, os.environ["MNIST_LIT_CACHE_DIR"], ignore_errors=True)


def run_cli(
    *args: str, cwd: Path, timeout: float = 600, check: bool = True, env: dict | None = None, merged: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lit ARGS`` in a subprocess, as a user would; returns the finished process.
    ``merged``: stderr goes into ``stdout`` in the order written, as a terminal shows them."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_lit", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mnist_lit {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{(proc.stderr or '')[-4000:]}"
        )
    return proc


#: What a command that was asked for text on a closed standard output says (exit status 1).
CLOSED_STDOUT = (
    "error: standard output is closed (>&-), so there is nowhere to write what was asked for; "
    "leave it open or send it to a file (> FILE)"
)


def run_cli_streams(*args: str, cwd: Path, stdout: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lit ARGS`` with a standard stream as a shell can leave it: ``stdout="closed"`` (``>&-``),
    ``"gone"`` (a pipe whose reader has exited, as ``| head -1`` once head has its line) or ``"stderr closed"``
    (``2>&-``: stdout is captured). Returns the finished process, stdout and stderr as text (those left open)."""
    full_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    command = [sys.executable, "-m", "mnist_lit", *args]
    if stdout == "gone":
        read_end, write_end = os.pipe()
        os.close(read_end)  # no reader: every write gets EPIPE (Python ignores SIGPIPE)
        try:
            return subprocess.run(
                command, cwd=cwd, stdout=write_end, stderr=subprocess.PIPE, text=True, env=full_env, timeout=600
            )
        finally:
            os.close(write_end)
    redirect = {"closed": ">&-", "stderr closed": "2>&-"}[stdout]
    shell = ["sh", "-c", f'exec "$@" {redirect}', "sh", *command]  # the shell closes it, as a user's would
    return subprocess.run(shell, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=600)


def offline_data(data_dir) -> list[str]:
    """The data flags of a run on real files already on disk: ``--data.data_dir DIR --data.download false``."""
    return ["--data.data_dir", str(data_dir), "--data.download", "false"]


def printed_test_line(stdout: str) -> str:
    """The ``Test accuracy: 0.9667 (test_loss 0.1040, CKPT)`` line that ``fit`` prints after its test."""
    return next(line for line in stdout.splitlines() if line.startswith("Test accuracy:"))


def printed_test_acc(stdout: str) -> float:
    """The test accuracy in :func:`printed_test_line`."""
    return float(printed_test_line(stdout).split()[2])


def printed_metrics(stdout: str) -> dict[str, float]:
    """The metrics of Lightning's results table (``validate``/``test``), e.g. ``{"test_acc": 0.9519...}``.

    Reads the plain table and, when ``rich`` is installed (Keras, from the ``bench`` extra, brings it), the
    boxed one (``│ test_acc │ 0.9519 │``)."""
    return {
        name: float(value)
        for name, value in re.findall(
            r"^[\s│┃|]*(\w+_(?:acc|loss|count))[\s│┃|]+([-+0-9.eE]+)[\s│┃|]*$", stdout, flags=re.MULTILINE
        )
    }


def printed_metric(stdout: str, name: str) -> float:
    """One metric of Lightning's results table (:func:`printed_metrics`); fails naming it when it is not printed."""
    metrics = printed_metrics(stdout)
    assert name in metrics, f"{name} not printed:\n{stdout[-3000:]}"
    return metrics[name]


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server started by a test: SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def version_dirs(workdir: Path) -> list[Path]:
    """The ``lightning_logs/version_N`` folders under ``workdir``, sorted by N."""
    root = workdir / "lightning_logs"
    return sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1])) if root.exists() else []


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Root of the real MNIST subset (10,000 train + 10,000 test images, torchvision layout)."""
    if not (MNIST_10K / "MNIST" / "raw").is_dir():
        pytest.fail(f"real MNIST subset not found at {MNIST_10K}; set MNIST_10K to its folder")
    return MNIST_10K


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir):
    """One `fit --config configs/mnist.yaml` (5 epochs, seed 0) on the real subset, in a subprocess.

    Returns a dict: ``workdir``, ``run_dir`` (lightning_logs/version_0), ``best_ckpt``, ``last_ckpt``,
    ``stdout``, ``stderr`` and ``test_acc`` parsed from the printed test accuracy.
    """
    workdir = tmp_path_factory.mktemp("trained_run")
    proc = run_cli(
        "fit", "--config", str(CONFIG), "--data.data_dir", str(mnist_dir), "--data.download", "false", cwd=workdir
    )
    run_dir = version_dirs(workdir)[-1]
    ckpts = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))
    return {
        "workdir": workdir,
        "run_dir": run_dir,
        "best_ckpt": ckpts[-1],
        "last_ckpt": run_dir / "checkpoints" / "last.ckpt",
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "test_acc": printed_test_acc(proc.stdout),
    }


@pytest.fixture(scope="module")
def served_model(trained_run, tmp_path_factory):
    """`python -m mnist_lit serve` of the trained run's best checkpoint, on a free 127.0.0.1 port, once per
    test module; yields {"url", "proc", "log", "health"} and stops the server afterwards (tests/serving.py)."""
    from serving import serve

    with serve(trained_run["best_ckpt"], tmp_path_factory.mktemp("serve")) as server:
        yield server


def pytest_collection_modifyitems(config, items):
    """Tests that need the trained run (a full recipe fit, about a minute on 2 cores) are ``slow``."""
    for item in items:
        if "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value or nan)] over all event files of a run folder, read with TensorBoard's reader."""
    found = defaultdict(list)
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                scalar = value.metadata.plugin_data.plugin_name == "scalars"
                number = float(tensor_util.make_ndarray(value.tensor)) if scalar else float("nan")
                found[value.tag].append((event.step, number))
    return found


def max_logged_step(run_dir: Path, tag: str = "train_loss_step") -> int:
    """The highest step at which ``tag`` was logged in the run folder's event files (-1: none yet)."""
    steps = [step for step, _ in events(run_dir).get(tag, [])]
    return max(steps, default=-1)


def sigterm_handled(pid: int) -> bool:
    """Whether the process catches SIGTERM (bit 15 of SigCgt in /proc/PID/status): mnist_lit installs its handler
    before fit, validate, test or predict is parsed (:func:`mnist_lit.signals.stop_between_runs`), Lightning its own
    as the loops start (for fit, a SIGTERM from then on is turned into a saved last.ckpt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.fixture
def one_torch_thread():
    """torch at one thread for the test (restored after): the picture tests' tensors are small, and on a shared
    2-core machine more threads only wait for each other."""
    import torch  # only the tests that use this fixture need it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """Start ``python -m mnist_lit ARGS`` in the background, unbuffered, no progress bar, stdout and stderr as text
    pipes (read them with ``communicate``), for a test that signals or watches the running process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def terminate_when_handled(
    *args: str, cwd: Path, timeout: float = 300, after_line: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lit ARGS``, send it SIGTERM as soon as it catches SIGTERM (:func:`sigterm_handled`:
    from the start of a command, mnist_lit.signals) and, if given, once a stderr line holds ``after_line`` (e.g.
    "Total params": the model summary a fit prints as it starts), and return the finished process (stdout and
    stderr as text)."""
    proc = start_cli(*args, cwd=cwd)
    assert proc.stderr is not None
    seen = []
    if after_line is not None:
        for line in proc.stderr:
            seen.append(line)
            if after_line in line:
                break
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not sigterm_handled(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "".join(seen) + stderr)
