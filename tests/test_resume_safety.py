"""Resumes never touch a run they refuse, say truly what they replace, never share a run with another resume, and
`validate`/`test`/`predict` stop on SIGTERM as `fit` does (defects of a fresh-user review, issue 19)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIG, events, offline_data, run_cli, terminate_when_handled, version_dirs

#: A short run of the recipe: 20 batches an epoch, 2 validation and 2 test batches.
SHORT = (
    "--trainer.limit_train_batches",
    "20",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.limit_test_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
)
RUN = Path("lightning_logs") / "version_0"


def fit_args(data_dir: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(data_dir),
        *SHORT,
        "--trainer.max_epochs",
        str(epochs),
        *extra,
    ]


def one_error_line(proc: subprocess.CompletedProcess, status: int = 2) -> str:
    """The process ended with ``status`` and exactly one ``error:`` line, no traceback; returns the line."""
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) -> the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_resume_with_fewer_epochs_is_refused_before_the_run_is_touched(tmp_path, mnist_dir):
    run_cli(*fit_args(mnist_dir, 3), cwd=tmp_path)
    before = snapshot(tmp_path)
    assert "test_acc" in events(tmp_path / RUN)
    # 2 is one below what it trained: Lightning lets that through (nothing trained, the logs rewritten).
    for ckpt, epochs in (("last", 1), (str(RUN / "checkpoints" / "last.ckpt"), 2)):
        line = one_error_line(run_cli(*fit_args(mnist_dir, epochs), "--ckpt_path", ckpt, cwd=tmp_path, check=False))
        assert line == (
            f"error: cannot resume {RUN}: its checkpoint {RUN / 'checkpoints' / 'last.ckpt'} has trained 3 epochs, "
            f"and --trainer.max_epochs is {epochs}; pass --trainer.max_epochs 4 or more to train further"
        )
        assert snapshot(tmp_path) == before  # no event trimmed, no config_resume_*.yaml, no new event file


@pytest.mark.slow
def test_a_resume_says_that_its_test_replaces_the_earlier_one(tmp_path, mnist_dir):
    run_cli(*fit_args(mnist_dir, 1), cwd=tmp_path)
    assert "test_acc" in events(tmp_path / RUN)
    resumed = run_cli(*fit_args(mnist_dir, 2), "--ckpt_path", "last", cwd=tmp_path)
    line = next(line for line in resumed.stderr.splitlines() if line.startswith("Resuming in "))
    assert re.fullmatch(
        rf"Resuming in \./{RUN}; removed \d+ events logged after that checkpoint \(the resumed run logs those "
        r"steps again; the earlier test's results are removed, here and from metrics\.json, and the test at the "
        r"end of this run replaces them\)",
        line,
    ), line
    logged = events(tmp_path / RUN)
    assert [step for step, _ in logged["test_acc"]] == [40]  # the resumed run's test only, at its last step
    tested = json.loads((tmp_path / RUN / "metrics.json").read_text())["test"]
    assert tested["test_acc"] == logged["test_acc"][0][1]
    untested = run_cli(*fit_args(mnist_dir, 3, "--test_after_fit", "false"), "--ckpt_path", "last", cwd=tmp_path)
    assert (
        "the earlier test's results are removed, here and from metrics.json, and with --test_after_fit false this "
        "run does not test again)" in untested.stderr
    )
    assert "test_acc" not in events(tmp_path / RUN)  # TensorBoard and metrics.json agree: no test of these weights
    assert "test" not in json.loads((tmp_path / RUN / "metrics.json").read_text())


@pytest.mark.slow
def test_a_copied_run_folder_resumes_without_its_earlier_test(tmp_path, mnist_dir):
    """A copy that does not keep file times (cp -r, an upload) gives the checkpoint a new mtime: the save time
    inside the checkpoint still tells the epoch's own events from the after-fit test's."""
    (tmp_path / "original").mkdir()
    run_cli(*fit_args(mnist_dir, 1), cwd=tmp_path / "original")
    time.sleep(1)  # the copy's mtimes come after every event of the original run
    shutil.copytree(tmp_path / "original", tmp_path / "copy", copy_function=shutil.copy)
    assert [step for step, _ in events(tmp_path / "copy" / RUN)["test_acc"]] == [20]
    run_cli(*fit_args(mnist_dir, 2), "--ckpt_path", "last", cwd=tmp_path / "copy")
    logged = events(tmp_path / "copy" / RUN)
    assert [step for step, _ in logged["test_acc"]] == [40]  # the resumed run's test only
    assert [step for step, _ in logged["val_acc"]] == [19, 39]  # each epoch once, the copied one kept


@pytest.mark.slow
def test_a_resume_killed_before_its_test_leaves_no_stale_test_result(tmp_path, mnist_dir):
    run_cli(*fit_args(mnist_dir, 1), cwd=tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with open(tmp_path / "resume.log", "w") as log:
        args = [*fit_args(mnist_dir, 3), "--ckpt_path", "last"]
        resume = subprocess.Popen([sys.executable, "-m", "mnist_lit", *args], cwd=tmp_path, env=env, stderr=log)
    deadline = time.monotonic() + 300
    while "Resuming in" not in (tmp_path / "resume.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    while "test" in json.loads((tmp_path / RUN / "metrics.json").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    resume.kill()  # SIGKILL during the resumed training, before its own test
    resume.wait(timeout=60)
    assert "test_acc" not in events(tmp_path / RUN)  # TensorBoard and metrics.json agree: no test of these weights
    assert "test" not in json.loads((tmp_path / RUN / "metrics.json").read_text())


@pytest.mark.slow
def test_a_run_being_resumed_cannot_be_resumed_by_a_second_process(tmp_path, mnist_dir):
    run_cli(*fit_args(mnist_dir, 1, "--test_after_fit", "false"), cwd=tmp_path)
    args = fit_args(mnist_dir, 2, "--test_after_fit", "false", "--ckpt_path", "last")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "mnist_lit", *args], cwd=tmp_path, env=env, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while f"Resuming {RUN} from" not in (tmp_path / "first.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # the first resume holds the run, stopped where it was
        before = snapshot(tmp_path / "lightning_logs")
        second = run_cli(*args, cwd=tmp_path, check=False)
        assert one_error_line(second) == (
            f"error: {RUN} is being trained by another process; wait for it or start a new run (fit without --ckpt_path)"
        )
        assert snapshot(tmp_path / "lightning_logs") == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert not [p.name for p in (tmp_path / RUN / "checkpoints").iterdir() if re.search(r"-v\d+\.ckpt$", p.name)]
    run_cli(*args, cwd=tmp_path)  # the lock goes with the process that held it: the run can be resumed again


@pytest.mark.slow
def test_a_run_whose_first_fit_still_trains_cannot_be_resumed(tmp_path, mnist_dir):
    args = fit_args(mnist_dir, 3, "--test_after_fit", "false")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *args], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / RUN / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # still training, after its first checkpoint
        before = snapshot(tmp_path / "lightning_logs")
        second = run_cli(*args, "--ckpt_path", "last", cwd=tmp_path, check=False)
        assert one_error_line(second) == (
            f"error: {RUN} is being trained by another process; wait for it or start a new run (fit without --ckpt_path)"
        )
        assert snapshot(tmp_path / "lightning_logs") == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_dir) -> Path:
    """A folder holding one short trained run (``lightning_logs/version_0``)."""
    workdir = tmp_path_factory.mktemp("short_run")
    run_cli(*fit_args(mnist_dir, 1, "--test_after_fit", "false"), cwd=workdir)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "test", "validate"])
def test_sigterm_stops_an_evaluation_with_143_and_leaves_no_folder(short_run, command):
    before, folders = snapshot(short_run / "lightning_logs"), version_dirs(short_run)
    # Batches of 8 and every batch of the split: long enough (seconds on any CPU) for the signal to land inside.
    limit = {"predict": "predict", "test": "test", "validate": "val"}[command]
    args = [command, "--ckpt_path", "last", "--data.batch_size", "8", f"--trainer.limit_{limit}_batches", "1.0"]
    proc = terminate_when_handled(*args, cwd=short_run)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: stopped by SIGTERM; nothing saved"
    assert "Wrote " not in stdout and "test_acc" not in stdout and "val_acc" not in stdout
    assert version_dirs(short_run) == folders  # no folder of the stopped run
    assert snapshot(short_run / "lightning_logs") == before
