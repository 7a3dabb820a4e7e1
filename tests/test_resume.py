"""A fit SIGKILLed in the middle of epoch 2 of 3 resumes with `fit --ckpt_path last`; runs are deterministic."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIG, events, max_logged_step, offline_data, printed_test_acc, run_cli, version_dirs

STEPS_PER_EPOCH = 71  # ceil(9,000 training images / batch_size 128)
LOG_EVERY = 10  # --trainer.log_every_n_steps: train_loss_step at steps 9, 19, ...
#: Lightning writes these more than once per step even in an uninterrupted run: `epoch` with every
#: log call (twice at each epoch end), and the graph/hparams/layout summaries each time a run starts.
REPEATED_BY_DESIGN = {
    "epoch",
    "__run_graph__",
    "step1",
    "custom_scalars__config__",
    "_hparams_/experiment",
    "_hparams_/session_start_info",
    "_hparams_/session_end_info",
}


def fit_args(mnist_dir: Path, *extra: str) -> list[str]:
    """The project's recipe for 3 epochs on 9,000 of the real training images (val_split 0.1)."""
    return [
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--data.val_split",
        "0.1",
        "--trainer.max_epochs",
        "3",
        "--trainer.log_every_n_steps",
        str(LOG_EVERY),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_in_epoch_2_then_resume_from_last(tmp_path, mnist_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with open(tmp_path / "killed_run.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_lit", *fit_args(mnist_dir)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        run_dir = tmp_path / "lightning_logs" / "version_0"
        kill_after = STEPS_PER_EPOCH + 20  # 20 batches into epoch 2, as seen in the run's own event file
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                if max_logged_step(run_dir, "train_loss_step") >= kill_after:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.3)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed_run.log").read_text()[-3000:]
    killed_at = max_logged_step(run_dir, "train_loss_step")
    assert STEPS_PER_EPOCH < killed_at < 2 * STEPS_PER_EPOCH - 1  # the kill landed inside epoch 2
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, STEPS_PER_EPOCH)  # epoch 2 never finished

    resumed = run_cli(*fit_args(mnist_dir, "--ckpt_path", "last"), cwd=tmp_path)
    assert (
        f"Checkpoint {Path('lightning_logs/version_0/checkpoints/last.ckpt')}: epoch 0, global step "
        f"{STEPS_PER_EPOCH}" in resumed.stderr
    )
    assert [d.name for d in version_dirs(tmp_path)] == ["version_0"]  # the logs continue in the same folder
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (final["epoch"], final["global_step"]) == (2, 3 * STEPS_PER_EPOCH)  # epoch 3 of 3 completed
    notices = [line for line in resumed.stderr.splitlines() if line.startswith(("Checkpoint ", "Resuming in "))]
    print(*notices, sep="\n")  # shown by pytest -rP
    removed = int(re.search(r"removed (\d+) events logged after that checkpoint", notices[-1]).group(1))
    assert removed >= (kill_after - STEPS_PER_EPOCH) // LOG_EVERY  # at least the killed epoch's train_loss_step
    test_acc = printed_test_acc(resumed.stdout)
    assert test_acc >= 0.95  # on the official 10,000 test images
    assert (run_dir / "config.yaml").is_file() and (run_dir / f"config_resume_step{STEPS_PER_EPOCH}.yaml").is_file()
    history = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert [(e["epoch"], e["step"]) for e in history] == [(e, STEPS_PER_EPOCH * (e + 1)) for e in range(3)]

    logged = events(run_dir)
    for tag, values in logged.items():
        if tag not in REPEATED_BY_DESIGN:
            steps = [step for step, _ in values]
            assert len(steps) == len(set(steps)), f"{tag} logged twice at a step: {sorted(steps)}"
    # Continuous, gap-free curves over the three epochs, as one uninterrupted run would have written them.
    total = 3 * STEPS_PER_EPOCH
    assert sorted(step for step, _ in logged["train_loss_step"]) == list(range(LOG_EVERY - 1, total, LOG_EVERY))
    assert sorted(step for step, _ in logged["val_acc"]) == [STEPS_PER_EPOCH * e - 1 for e in (1, 2, 3)]
    # Logged at the checkpoint's own step on both sides of it: the epoch-start learning rate after the save
    # (logged again by the resumed run), the epoch-end images before it (kept, never logged again).
    if "lr-RMSprop" in logged:  # configs/mnist.yaml's LearningRateMonitor
        assert sorted(step for step, _ in logged["lr-RMSprop"]) == [0, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    if "val_predictions" in logged:  # configs/mnist.yaml's ValPredictionGrid
        assert sorted(step for step, _ in logged["val_predictions"]) == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    assert sorted(step for step, _ in logged["test_acc"]) == [total]
    assert abs(dict(logged["test_acc"])[total] - test_acc) < 1e-4


def scalars(run_dir: Path) -> dict[tuple[str, int], float]:
    """(tag, step) -> value of every scalar a run logged (images and other summaries left out)."""
    return {
        (tag, step): value
        for tag, values in events(run_dir).items()
        if tag != "epoch"
        for step, value in values
        if not math.isnan(value)
    }


@pytest.mark.slow
def test_two_seeded_runs_give_identical_metrics_and_weights(tmp_path, mnist_dir):
    args = [
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--data.split",
        "random",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "12",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--test_after_fit",
        "false",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    for name in ("a", "b"):  # two independent processes at the same time
        (tmp_path / name).mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mnist_lit", *args],
                cwd=tmp_path / name,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    a, b = (tmp_path / name / "lightning_logs" / "version_0" for name in ("a", "b"))
    metrics_a, metrics_b = scalars(a), scalars(b)
    losses = [v for (tag, _), v in sorted(metrics_a.items()) if tag == "train_loss_step"]
    assert len(losses) == 6 and losses[-1] < losses[0]  # it trained
    assert metrics_a == metrics_b  # every logged value, bit for bit
    weights_a = torch.load(a / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights_b = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
