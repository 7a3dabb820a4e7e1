"""Several processes with Lightning's ``ddp`` strategy on CPU (gloo): same results as one process.

Every run is a real ``python -m mnist_lit`` subprocess that Lightning re-launches once per rank,
on the real MNIST subset (10,000 train + 10,000 test images).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import CONFIG, REPO, offline_data, printed_metrics, printed_test_line, run_cli, version_dirs

from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split
from mnist_lit.data.sharding import per_device_batch_size
from mnist_lit.errors import DataError

pytestmark = pytest.mark.ddp

DDP_CONFIG = REPO / "configs" / "ddp.yaml"


def ddp_args(mnist_dir: Path, devices: int) -> list[str]:
    """The tutorial's recipe plus configs/ddp.yaml, on ``devices`` CPU processes."""
    return [
        "--config",
        str(CONFIG),
        "--config",
        str(DDP_CONFIG),
        *offline_data(mnist_dir),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(devices),
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
    ]


def test_global_batch_is_split_over_processes():
    assert per_device_batch_size(128, 1, training=True) == 128
    assert per_device_batch_size(128, 2, training=True) == 64
    assert per_device_batch_size(128, 3, training=False) == 43  # evaluation rounds up
    with pytest.raises(DataError, match=r"batch_size=128 .* 3 processes; use --data.batch_size 126 or 129"):
        per_device_batch_size(128, 3, training=True)


@pytest.mark.slow
def test_fit_refuses_a_batch_the_processes_do_not_divide(tmp_path, mnist_dir):
    proc = run_cli("fit", *ddp_args(mnist_dir, 3), "--trainer.max_epochs", "1", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.batch_size=128 is the global batch (all devices together) and must be divisible by the "
        "3 processes; use --data.batch_size 126 or 129"
    )
    assert not (tmp_path / "lightning_logs").exists()  # refused before any process or folder was made


@pytest.mark.slow
def test_fit_on_two_processes(tmp_path, mnist_dir, trained_run):
    # Global batch 32 = 16 per process, so that one epoch of 7,000 images reaches >= 0.93.
    proc = run_cli("fit", *ddp_args(mnist_dir, 2), "--trainer.max_epochs", "1", "--data.batch_size", "32", cwd=tmp_path)
    (run_dir,) = version_dirs(tmp_path)  # exactly one version_N for the two processes
    line = printed_test_line(proc.stdout)
    test_acc = float(line.split()[2])
    assert test_acc >= 0.93, line

    # Written once, by rank 0: one config, one best checkpoint, event files of one process only,
    # as many as the single-process run of the same config writes (one per phase: fit, test).
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints
    assert (run_dir / "config.yaml").is_file() and (run_dir / "hparams.yaml").is_file()
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == len(list(trained_run["run_dir"].glob("events.out.tfevents.*"))), events
    assert len({name.name.split(".")[-2] for name in events}) == 1, events  # ... .HOST.PID.N: one writer PID

    best = run_dir / "checkpoints" / next(name for name in checkpoints if name != "last.ckpt")
    state = torch.load(best, weights_only=True, map_location="cpu")
    # Training data sharded: 7,000 images over 2 ranks = 3,500 each = ceil(3500 / 16) = 219 steps
    # (unsharded, each rank would step 438 times).
    assert state["global_step"] == 219
    model, _ = load_model(best)
    images, labels = load_split(mnist_dir, "test")
    with torch.no_grad():
        preds = torch.cat([model(chunk).argmax(1) for chunk in images.split(2000)])
    assert round((preds == labels).float().mean().item(), 4) == test_acc


@pytest.mark.slow
def test_validate_same_on_one_and_two_processes(tmp_path, mnist_dir, trained_run):
    ckpt = str(trained_run["best_ckpt"])
    one = printed_metrics(run_cli("validate", *ddp_args(mnist_dir, 1), "--ckpt_path", ckpt, cwd=tmp_path).stdout)
    two = printed_metrics(run_cli("validate", *ddp_args(mnist_dir, 2), "--ckpt_path", ckpt, cwd=tmp_path).stdout)
    assert one["val_count"] == two["val_count"] == 3000  # the last 30% of 10,000 training images
    assert round(one["val_acc"], 4) == round(two["val_acc"], 4)
    assert abs(one["val_loss"] - two["val_loss"]) < 1e-4


@pytest.mark.slow
def test_test_on_three_processes_counts_each_image_once(tmp_path, mnist_dir, trained_run):
    # Global batch 99 = 33 per process; 10,000 images don't split evenly: rank 0 gets 3,334 images
    # (102 batches), ranks 1-2 get 3,333 (101 batches). A padding sampler would count 10,002.
    proc = run_cli(
        "test",
        *ddp_args(mnist_dir, 3),
        "--data.batch_size",
        "99",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        cwd=tmp_path,
    )
    metrics = printed_metrics(proc.stdout)
    assert metrics["test_count"] == 10000
    assert round(metrics["test_acc"], 4) == trained_run["test_acc"]  # single process, same checkpoint


@pytest.mark.slow
def test_predict_on_two_processes_writes_each_image_once(tmp_path, mnist_dir, trained_run):
    run_cli("predict", *ddp_args(mnist_dir, 2), "--ckpt_path", str(trained_run["best_ckpt"]), cwd=tmp_path)
    (run_dir,) = version_dirs(tmp_path)
    with open(run_dir / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["index"]) for row in rows] == list(range(10000))
    _, labels = load_split(mnist_dir, "test")
    assert [int(row["label"]) for row in rows] == labels.tolist()
    correct = sum(row["pred"] == row["label"] for row in rows)
    assert round(correct / len(rows), 4) == trained_run["test_acc"]  # what one process tested
