"""A trained run is self-contained: a checkpoint is enough to test, validate and predict, with the run's own
settings; best/last resolve in a new process; contradicting flags, foreign and damaged files are refused with
one line; runs never share or rewrite each other's folders; SIGTERM saves last.ckpt and exits 143."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    CONFIG,
    offline_data,
    printed_metric,
    printed_test_acc,
    run_cli,
    start_cli,
    terminate_when_handled,
    version_dirs,
)
from PIL import Image

from mnist_lit.checkpoint import CHECKSUM_KEY, load_checkpoint
from mnist_lit.data import load_split

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: A short run of the recipe: 1 epoch of 20 batches, 2 validation batches, the whole test set after it.
SHORT = (
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "20",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
)


def fit_args(data_dir: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(data_dir),
        *SHORT,
        *extra,
    ]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The process ended with exit 2 and exactly one ``error:`` line, no traceback; returns the line."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "weights_only=False" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def no_network_env(tmp_path: Path) -> dict:
    """An environment in which any outgoing socket connection fails and is recorded in ``connections.log``."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(
        "import socket\n"
        f"LOG = {str(tmp_path / 'connections.log')!r}\n"
        "def refuse(self, address, *args):\n"
        "    open(LOG, 'a').write(repr(address) + '\\n')\n"
        "    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
    )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory, mnist_dir):
    """A short offline fit with ``--model.pixel_scale raw`` (0-255 pixels, as the tutorial feeds them)."""
    workdir = tmp_path_factory.mktemp("raw_run")
    proc = run_cli(*fit_args(mnist_dir, "--model.pixel_scale", "raw"), cwd=workdir)
    run_dir = version_dirs(workdir)[-1]
    return {
        "workdir": workdir,
        "last": run_dir / "checkpoints" / "last.ckpt",
        "test_acc": printed_test_acc(proc.stdout),
    }


@pytest.mark.slow
def test_raw_pixel_run_tests_right_from_the_checkpoint_alone_or_with_the_recipe_config(raw_run, mnist_dir, tmp_path):
    ckpt = str(raw_run["last"])
    alone = run_cli("test", "--ckpt_path", ckpt, cwd=tmp_path, env=no_network_env(tmp_path))
    assert round(printed_metric(alone.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    with_config = run_cli(
        "test",
        "--config",
        str(CONFIG),
        "--ckpt_path",
        ckpt,
        *offline_data(mnist_dir),
        cwd=tmp_path,
    )
    assert round(printed_metric(with_config.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    assert load_checkpoint(ckpt)["hyper_parameters"]["pixel_scale"] == "raw"
    assert not (tmp_path / "connections.log").exists()


@pytest.mark.slow
def test_validate_test_predict_after_an_offline_fit_need_only_the_checkpoint(raw_run, mnist_dir, tmp_path):
    ckpt, env = str(raw_run["last"]), no_network_env(tmp_path)
    validated = run_cli("validate", "--ckpt_path", ckpt, cwd=tmp_path, env=env)
    assert printed_metric(validated.stdout, "val_count") == 256  # the run's own settings: limit_val_batches 2 of 128
    validated = run_cli("validate", "--ckpt_path", ckpt, "--trainer.limit_val_batches", "1.0", cwd=tmp_path, env=env)
    assert printed_metric(validated.stdout, "val_count") == 3000  # a flag overrides: the run's whole 30% holdout
    run_cli("predict", "--ckpt_path", ckpt, cwd=tmp_path, env=env)
    rows = list(csv.DictReader((version_dirs(tmp_path)[-1] / "predictions.csv").open()))
    assert len(rows) == 10_000
    assert round(sum(r["label"] == r["pred"] for r in rows) / len(rows), 4) == round(raw_run["test_acc"], 4)
    assert not (tmp_path / "connections.log").exists()  # the guard would have recorded any connection


@pytest.mark.slow
def test_flags_that_contradict_the_model_are_refused(raw_run, tmp_path):
    ckpt = str(raw_run["last"])
    line = one_error_line(
        run_cli("test", "--ckpt_path", ckpt, "--model.pixel_scale", "unit", cwd=tmp_path, check=False)
    )
    assert "--model.pixel_scale 'unit' contradicts" in line and "'raw'" in line
    line = one_error_line(
        run_cli("validate", "--ckpt_path", ckpt, "--data.val_split", "0.2", cwd=tmp_path, check=False)
    )
    assert "data.val_split 0.2 contradicts the 0.3" in line
    line = one_error_line(
        run_cli("test", "--ckpt_path", ckpt, "--data.dataset", "fashion_mnist", cwd=tmp_path, check=False)
    )
    assert "a mnist model, but the data is fashion_mnist" in line
    line = one_error_line(
        run_cli("fit", "--config", str(CONFIG), "--data.pixel_scale", "raw", cwd=tmp_path, check=False)
    )
    assert "use --model.pixel_scale" in line


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_run_tests_from_its_checkpoint_and_is_refused_on_mnist(tmp_path, mnist_dir):
    fitted = run_cli(*fit_args(FASHION_DIR, "--data.dataset", "fashion_mnist"), cwd=tmp_path)
    ckpt = str(version_dirs(tmp_path)[-1] / "checkpoints" / "last.ckpt")
    assert load_checkpoint(ckpt)["class_names"][9] == "Ankle boot"
    tested = run_cli("test", "--ckpt_path", ckpt, cwd=tmp_path)
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(printed_test_acc(fitted.stdout), 4)
    line = one_error_line(
        run_cli(
            "test",
            "--config",
            str(CONFIG),
            "--ckpt_path",
            ckpt,
            *offline_data(mnist_dir),
            cwd=tmp_path,
            check=False,
        )
    )
    assert "a fashion_mnist model, but the data is mnist" in line
    line = one_error_line(
        run_cli("predict", "--ckpt_path", ckpt, "--data.predict_path", str(tmp_path), cwd=tmp_path, check=False)
    )
    assert "reads pictures as digits" in line


@pytest.mark.slow
def test_best_and_last_resolve_to_the_newest_run_in_a_new_process(trained_run):
    workdir = trained_run["workdir"]
    best = run_cli("test", "--ckpt_path", "best", cwd=workdir)
    assert (
        f"Using checkpoint {Path('lightning_logs') / 'version_0' / 'checkpoints' / trained_run['best_ckpt'].name}"
        in best.stderr
    )
    assert round(printed_metric(best.stdout, "test_acc"), 4) == round(trained_run["test_acc"], 4)
    last = run_cli("test", "--ckpt_path", "last", cwd=workdir)
    explicit = run_cli("test", "--ckpt_path", str(trained_run["last_ckpt"]), cwd=workdir)
    assert printed_metric(last.stdout, "test_acc") == printed_metric(explicit.stdout, "test_acc")


@pytest.mark.slow
def test_no_or_unsupported_ckpt_path_is_one_line(tmp_path):
    for command in ("test", "validate", "predict"):
        line = one_error_line(run_cli(command, "--config", str(CONFIG), cwd=tmp_path, check=False))
        assert line.startswith(f"error: {command} needs a trained model: add --ckpt_path")
    for value in ("hpc", "https://example.org/model.ckpt"):
        assert "not supported here" in one_error_line(run_cli("test", "--ckpt_path", value, cwd=tmp_path, check=False))
    assert "is a folder" in one_error_line(run_cli("test", "--ckpt_path", str(tmp_path), cwd=tmp_path, check=False))
    line = one_error_line(run_cli("test", "--ckpt_path", "best", cwd=tmp_path, check=False))
    assert "no best checkpoint found in lightning_logs/" in line
    assert not (tmp_path / "lightning_logs").exists()  # nothing written before a configuration error


@pytest.mark.slow
def test_damaged_and_foreign_files_each_get_their_own_diagnosis(trained_run, tmp_path):
    data = bytearray(trained_run["last_ckpt"].read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle: tensor data
    (tmp_path / "flipped.ckpt").write_bytes(bytes(data))
    line = one_error_line(run_cli("test", "--ckpt_path", str(tmp_path / "flipped.ckpt"), cwd=tmp_path, check=False))
    assert line == (
        f"error: {tmp_path / 'flipped.ckpt'}: damaged: checksum mismatch (its content no longer has the "
        "SHA-256 saved in it); use another checkpoint, e.g. last.ckpt or the best one"
    )
    (tmp_path / "config.yaml").write_text("model:\n  lr: 0.001\n")
    exported = {}
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        run_cli(
            "export",
            "--ckpt_path",
            str(trained_run["best_ckpt"]),
            "--format",
            fmt,
            "--output",
            str(tmp_path / name),
            "--num_images",
            "10",
            cwd=tmp_path,
        )
        exported[fmt] = tmp_path / name
    expected = {
        tmp_path / "config.yaml": "a text file (first line: 'model:'), not a checkpoint",
        exported["onnx"]: "an ONNX model (what `export --format onnx` writes), not a checkpoint",
        exported["torchscript"]: "a TorchScript archive (what `export --format torchscript` writes), not a checkpoint",
    }
    for path, what in expected.items():
        line = one_error_line(run_cli("test", "--ckpt_path", str(path), cwd=tmp_path, check=False))
        assert line.startswith(f"error: {path}: {what}; give the .ckpt file written by fit"), line
    assert CHECKSUM_KEY in load_checkpoint(trained_run["last_ckpt"])


@pytest.mark.slow
def test_resume_continues_only_the_same_run(tmp_path, mnist_dir):
    """Run A finishes; run B (another lr) is killed before its first checkpoint; B again with --ckpt_path last
    trains in B's folder and leaves A's byte-identical; resuming with another lr is refused, naming it."""
    run_cli(*fit_args(mnist_dir, "--test_after_fit", "false"), cwd=tmp_path)
    run_a = version_dirs(tmp_path)[0]
    before = {p: p.read_bytes() for p in run_a.rglob("*") if p.is_file()}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    killed = subprocess.Popen(
        [sys.executable, "-m", "mnist_lit", *fit_args(mnist_dir, "--model.lr", "0.002")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_b = tmp_path / "lightning_logs" / "version_1"
    deadline = time.monotonic() + 300  # its config.yaml is written when training starts, after its event file
    while (
        not (list(run_b.glob("events.out.tfevents.*")) and (run_b / "config.yaml").is_file())
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.5)  # config.yaml complete
    killed.kill()
    killed.wait()
    assert not (run_b / "checkpoints").exists()  # killed before its first checkpoint
    again = run_cli(*fit_args(mnist_dir, "--model.lr", "0.002", "--ckpt_path", "last"), cwd=tmp_path)
    assert f"{run_b.relative_to(tmp_path)} stopped before its first checkpoint" in again.stderr
    assert (run_b / "checkpoints" / "last.ckpt").is_file() and len(version_dirs(tmp_path)) == 2
    assert {p: p.read_bytes() for p in run_a.rglob("*") if p.is_file()} == before
    assert load_checkpoint(run_b / "checkpoints" / "last.ckpt")["hyper_parameters"]["lr"] == 0.002
    line = one_error_line(
        run_cli(
            *fit_args(mnist_dir, "--model.lr", "0.003", "--ckpt_path", str(run_b / "checkpoints" / "last.ckpt")),
            cwd=tmp_path,
            check=False,
        )
    )
    assert "the command differs from the run's configuration in model.lr 0.003 (run: 0.002)" in line
    assert "--finetune_from" in line
    tuned = run_cli(
        *fit_args(
            mnist_dir,
            "--model.lr",
            "0.003",
            "--finetune_from",
            str(run_b / "checkpoints" / "last.ckpt"),
            "--test_after_fit",
            "false",
        ),
        cwd=tmp_path,
    )
    assert "Fine-tuning: a new run" in tuned.stderr and len(version_dirs(tmp_path)) == 3


@pytest.mark.slow
def test_two_fits_started_together_get_two_folders_and_logger_false_twice(tmp_path, mnist_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    args = [sys.executable, "-m", "mnist_lit", *fit_args(mnist_dir, "--test_after_fit", "false")]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    runs = version_dirs(tmp_path)
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer per folder
    no_logger = tmp_path / "no_logger"
    no_logger.mkdir()
    for _ in range(2):  # the second run used to stop on the first one's config.yaml
        proc = run_cli(*fit_args(mnist_dir, "--trainer.logger", "false", "--test_after_fit", "false"), cwd=no_logger)
        assert "logger false: no run folder, so without" in proc.stderr and "Traceback" not in proc.stderr
    assert not (no_logger / "config.yaml").exists() and not (no_logger / "lightning_logs").exists()


@pytest.mark.slow
def test_fast_dev_run_and_logger_false_write_nothing_over_the_current_folder(trained_run, tmp_path, mnist_dir):
    """fast_dev_run swaps in a logger without a folder, so the reports (metrics.json, learning_curves.png, ...) were
    written into the current folder over files of those names, and predict without a run folder replaced a
    predictions.csv there. Now they are left out with one line, and predict refuses before predicting."""
    mine = {"metrics.json": "my metrics\n", "learning_curves.png": "my plot\n", "predictions.csv": "my predictions\n"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
    fit = run_cli(
        "fit", "--config", str(CONFIG), *offline_data(mnist_dir), "--trainer.fast_dev_run", "true", cwd=tmp_path
    )
    assert "fast_dev_run: no run folder, so without" in fit.stderr and "MetricsHistory" in fit.stderr
    ckpt = str(trained_run["best_ckpt"])
    for flag in (["--trainer.logger", "false"], ["--trainer.fast_dev_run", "true"]):
        out = run_cli("predict", "--ckpt_path", ckpt, *offline_data(mnist_dir), *flag, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
            f"error: {tmp_path / 'predictions.csv'} exists; give the run a folder of its own (no --trainer.logger "
            "false or --trainer.fast_dev_run) or move that file (predictions never replace a file)"
        ), out.stderr[-2000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(mine)
    assert all((tmp_path / name).read_text() == text for name, text in mine.items())


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_exits_143_and_resume_finishes(tmp_path, mnist_dir):
    # Epochs of 400 batches of 16 images: long enough (seconds on any CPU) for the signal to land inside epoch 2.
    args = fit_args(
        mnist_dir, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "400", "--data.batch_size", "16"
    )
    proc = start_cli(*args, cwd=tmp_path)
    run_dir = tmp_path / "lightning_logs" / "version_0"
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch's last.ckpt: Lightning's SIGTERM handler is in place
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: stopped by SIGTERM; saved {Path('lightning_logs')}/version_0/"
        "checkpoints/last.ckpt; continue with the same command and "
        "--ckpt_path last"
    )
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert 400 < stopped["global_step"] < 800  # mid-epoch 2, not the epoch-end checkpoint
    resumed = run_cli(*args, "--ckpt_path", "last", cwd=tmp_path)
    assert f"Resuming {Path('lightning_logs') / 'version_0'}" in resumed.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 800  # 2 epochs of 400 batches
    assert 0.1 < printed_test_acc(resumed.stdout) <= 1.0 and len(version_dirs(tmp_path)) == 1


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_naming_the_checkpoint_to_continue_from(tmp_path, mnist_dir):
    """Ctrl-C (SIGINT) in epoch 2: Lightning's graceful shutdown saves nothing (a DDP run's ranks are each
    elsewhere), so the line names epoch 1's last.ckpt; rc 130 as a shell reports SIGINT, never 1 or a traceback."""
    args = fit_args(
        mnist_dir, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "400", "--data.batch_size", "16"
    )
    proc = start_cli(*args, cwd=tmp_path)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"error: stopped by Ctrl-C; continue from {Path('lightning_logs')}/version_0/checkpoints/last.ckpt "
        "(its last finished epoch) with the same command and --ckpt_path last"
    )
    assert load_checkpoint(last)["global_step"] == 400  # epoch 1's, untouched


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_sigterm_as_the_training_ends_still_stops_with_143_and_one_line(tmp_path, mnist_dir, delay):
    """Between the last batch and the test after fit no Lightning loop looks at SIGTERM: it was recorded and
    ignored (the test ran, exit 0), or, once Lightning had restored the default handler, it killed the process
    with no line and the last pictures unwritten."""
    proc = start_cli(*fit_args(mnist_dir, "--trainer.limit_train_batches", "10"), cwd=tmp_path)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "`Trainer.fit` stopped" in line:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM; "), last
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert "last.ckpt" in last or f"test --ckpt_path {Path('lightning_logs')}/version_0/checkpoints/epoch0-" in last
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 10


def test_load_checkpoint_verifies_the_checksum_of_a_tensor_change(trained_run, tmp_path):
    checkpoint = torch.load(trained_run["last_ckpt"], weights_only=True)
    checkpoint["state_dict"]["net.classifier.4.bias"][3] += 1e-3
    torch.save(checkpoint, tmp_path / "edited.ckpt")  # plain torch.save: the old checksum travels along
    with pytest.raises(Exception, match="damaged: checksum mismatch"):
        load_checkpoint(tmp_path / "edited.ckpt")


# --- Defects found by a fresh-user review of the above (issue 15, second round) ---------------------------------


def metrics_history(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run's ``metrics.json``."""
    return json.loads((run_dir / "metrics.json").read_text())["epochs"]


@pytest.mark.slow
def test_resume_keeps_the_history_and_never_resumes_into_an_evaluation_folder(tmp_path, mnist_dir):
    """A finished run resumed again keeps its metrics.json epochs; a resume that trains further appends to them;
    `fit --ckpt_path last` skips the folder a `test` made (its config.yaml names a ckpt_path)."""
    args = fit_args(mnist_dir, "--test_after_fit", "false")
    run_cli(*args, cwd=tmp_path)
    run_dir = version_dirs(tmp_path)[0]
    first = metrics_history(run_dir)
    assert [e["epoch"] for e in first] == [0] and first[0]["step"] == 20
    run_cli("test", "--ckpt_path", "last", cwd=tmp_path)  # makes version_1, an evaluation folder
    again = run_cli(*args[:-2], "--ckpt_path", "last", cwd=tmp_path)  # max_epochs reached: nothing to train
    assert f"Resuming {run_dir.relative_to(tmp_path)} from" in again.stderr
    assert not (tmp_path / "lightning_logs" / "version_1" / "checkpoints").exists()
    assert metrics_history(run_dir) == first  # was emptied by the test after fit
    recorded_test = json.loads((run_dir / "metrics.json").read_text())["test"]["test_acc"]
    assert round(recorded_test, 4) == printed_test_acc(again.stdout)
    run_cli(*args, "--ckpt_path", "last", "--trainer.max_epochs", "2", cwd=tmp_path)
    history = metrics_history(run_dir)
    assert [e["epoch"] for e in history] == [0, 1] and history[0] == first[0] and history[1]["step"] == 40


def copy_run(workdir: Path, to: Path) -> Path:
    """A copy of a run's working folder (lightning_logs/...), so a test may resume it without changing the original."""
    shutil.copytree(workdir / "lightning_logs", to / "lightning_logs")
    return to


@pytest.mark.slow
def test_resume_refuses_other_data_but_follows_the_same_data_elsewhere(raw_run, mnist_dir, tmp_path):
    """data_dir may change on resume (the same files moved, even decompressed); other data may not."""
    workdir = copy_run(raw_run["workdir"], tmp_path / "work")
    other = tmp_path / "other" / "MNIST" / "raw"  # another MNIST subset of the same size: the test images
    other.mkdir(parents=True)
    for stem in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        shutil.copy(mnist_dir / "MNIST" / "raw" / f"t10k-{stem}.gz", other / f"t10k-{stem}.gz")
        shutil.copy(mnist_dir / "MNIST" / "raw" / f"t10k-{stem}.gz", other / f"train-{stem}.gz")
    last = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    for ckpt_path in ("last", str(last)):
        line = one_error_line(
            run_cli(
                *fit_args(tmp_path / "other", "--model.pixel_scale", "raw", "--ckpt_path", ckpt_path),
                cwd=workdir,
                check=False,
            )
        )
        assert "was trained on 10,000 mnist training images" in line and str(mnist_dir) in line, line
        assert f"{tmp_path / 'other'} holds 10,000 other training images" in line, line
    empty = tmp_path / "empty"  # a download would bring the official 60,000 images, not the run's 10,000
    line = one_error_line(
        run_cli(
            *fit_args(empty, "--model.pixel_scale", "raw", "--ckpt_path", "last", "--data.download", "true"),
            cwd=workdir,
            check=False,
            env=no_network_env(tmp_path),
        )
    )
    assert f"{empty} holds no mnist training files" in line and "not the official set" in line, line
    assert not empty.exists() and not (tmp_path / "connections.log").exists()
    assert last.read_bytes() == before and len(version_dirs(workdir)) == 1
    moved = tmp_path / "moved" / "MNIST" / "raw"  # the same data, moved and decompressed
    moved.mkdir(parents=True)
    for source in (mnist_dir / "MNIST" / "raw").glob("*.gz"):
        (moved / source.stem).write_bytes(gzip.decompress(source.read_bytes()))
    resumed = run_cli(
        *fit_args(
            tmp_path / "moved",
            "--model.pixel_scale",
            "raw",
            "--ckpt_path",
            "last",
            "--trainer.max_epochs",
            "2",
            "--test_after_fit",
            "false",
        ),
        cwd=workdir,
    )
    assert "Resuming lightning_logs/version_0 from" in resumed.stderr
    assert load_checkpoint(last)["global_step"] == 40


@pytest.mark.slow
def test_a_config_file_naming_only_the_checkpoint_keeps_the_runs_settings(raw_run, tmp_path):
    """A --config holding just ckpt_path: what it leaves unset is the run's (data folder, split, pixel scale,
    limit_val_batches), never a default the run did not use (a data folder to download into, the whole holdout)."""
    ckpt, env = str(raw_run["last"]), no_network_env(tmp_path)
    only = tmp_path / "only.yaml"
    only.write_text(yaml.safe_dump({"ckpt_path": ckpt}))
    validated = run_cli("validate", "--config", str(only), cwd=tmp_path, env=env)
    assert printed_metric(validated.stdout, "val_count") == 256  # the run's limit_val_batches 2 of 128
    tested = run_cli("test", "--config", str(only), cwd=tmp_path, env=env)
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    assert not (tmp_path / "connections.log").exists()


@pytest.mark.slow
def test_a_checkpoint_copied_out_of_its_run_tests_the_same_without_lightnings_adverts(raw_run, tmp_path):
    """Without config.yaml beside it the settings come from the checkpoint; Lightning's litmodels advert and its
    "callbacks used to create the checkpoint need to be provided" warning (an evaluation restores none) are hidden."""
    copied = tmp_path / "copied.ckpt"
    shutil.copy(raw_run["last"], copied)
    tested = run_cli("test", "--ckpt_path", str(copied), cwd=tmp_path, env=no_network_env(tmp_path))
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    assert "Tip:" not in tested.stderr and "Be aware that when using" not in tested.stderr, tested.stderr


@pytest.mark.slow
def test_validate_refuses_other_training_data(raw_run, mnist_dir, tmp_path):
    """validate scores the run's held-out part of its training file: on another training file it would score
    images the model trained on, a silently higher val_acc. Refused; the same data elsewhere still validates."""
    ckpt = str(raw_run["last"])
    other = tmp_path / "other" / "MNIST" / "raw"  # same size and format: the test images as a training file
    other.mkdir(parents=True)
    for stem in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for split in ("t10k", "train"):
            shutil.copy(mnist_dir / "MNIST" / "raw" / f"t10k-{stem}.gz", other / f"{split}-{stem}.gz")
    line = one_error_line(
        run_cli("validate", "--ckpt_path", ckpt, "--data.data_dir", str(tmp_path / "other"), cwd=tmp_path, check=False)
    )
    assert line.startswith(f"error: cannot validate {ckpt}: its run was trained on 10,000 mnist training images"), line
    assert "or use test, which evaluates on any test set" in line, line
    same = run_cli("validate", "--ckpt_path", ckpt, "--data.data_dir", str(mnist_dir), cwd=tmp_path)
    assert 0 < printed_metric(same.stdout, "val_acc") <= 1


@pytest.mark.slow
def test_finetune_refuses_another_pixel_scale_and_asks_for_another_dataset(raw_run, mnist_dir, tmp_path):
    ckpt = str(raw_run["last"])
    line = one_error_line(run_cli(*fit_args(mnist_dir, "--finetune_from", ckpt), cwd=tmp_path, check=False))
    assert f"--finetune_from {ckpt}: its weights were trained with model.pixel_scale 'raw'" in line, line
    assert "this run's model has 'unit'" in line and "add --model.pixel_scale raw" in line, line
    fashion = tmp_path / "fashion.yaml"  # a config of one's own that trains on Fashion-MNIST
    fashion.write_text(f"data:\n  dataset: fashion_mnist\n  data_dir: {FASHION_DIR}\n")
    line = one_error_line(
        run_cli(
            *fit_args(mnist_dir, "--config", str(fashion), "--model.pixel_scale", "raw", "--finetune_from", ckpt),
            cwd=tmp_path,
            check=False,
        )
    )
    assert "a mnist model; this run trains on fashion_mnist" in line and "--data.dataset fashion_mnist" in line, line
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_finetune_across_data_sets_when_asked_explicitly(raw_run, tmp_path):
    tuned = run_cli(
        *fit_args(
            FASHION_DIR,
            "--data.dataset",
            "fashion_mnist",
            "--model.pixel_scale",
            "raw",
            "--finetune_from",
            str(raw_run["last"]),
            "--test_after_fit",
            "false",
        ),
        cwd=tmp_path,
    )
    notice = [line for line in tuned.stderr.splitlines() if "transfer learning" in line]
    expected = (
        "Fine-tuning a mnist model's weights on fashion_mnist (transfer learning): its outputs now mean "
        "fashion_mnist's classes"
    )
    assert notice == [expected], tuned.stderr[-2000:]
    tuned_ckpt = load_checkpoint(version_dirs(tmp_path)[-1] / "checkpoints" / "last.ckpt")
    assert tuned_ckpt["hyper_parameters"]["dataset"] == "fashion_mnist" and tuned_ckpt["class_names"][9] == "Ankle boot"


@pytest.mark.slow
def test_validate_accepts_a_split_seed_only_where_it_changes_nothing(raw_run, mnist_dir, tmp_path):
    ckpt = str(raw_run["last"])
    plain = run_cli("validate", "--ckpt_path", ckpt, cwd=tmp_path)
    seeded = run_cli("validate", "--ckpt_path", ckpt, "--data.split_seed", "7", cwd=tmp_path)  # split tail: no effect
    assert printed_metric(seeded.stdout, "val_acc") == printed_metric(plain.stdout, "val_acc")
    assert printed_metric(seeded.stdout, "val_count") == 256
    (tmp_path / "random").mkdir()
    run_cli(*fit_args(mnist_dir, "--data.split", "random", "--test_after_fit", "false"), cwd=tmp_path / "random")
    random_ckpt = str(version_dirs(tmp_path / "random")[-1] / "checkpoints" / "last.ckpt")
    line = one_error_line(
        run_cli("validate", "--ckpt_path", random_ckpt, "--data.split_seed", "7", cwd=tmp_path, check=False)
    )
    assert "data.split_seed 7 contradicts the 42" in line, line
    run_cli("validate", "--ckpt_path", random_ckpt, "--data.split_seed", "42", cwd=tmp_path)  # the same seed


@pytest.mark.slow
def test_best_never_falls_back_to_an_older_run(tmp_path, mnist_dir):
    """Run B, stopped by SIGTERM before its first validation, holds only last.ckpt: `best` names B and says what
    to do instead of testing run A's model; `last` is B's file; evaluation folders in between change nothing."""
    run_cli(*fit_args(mnist_dir, "--test_after_fit", "false"), cwd=tmp_path)
    proc = terminate_when_handled(*fit_args(mnist_dir, "--model.lr", "0.002"), cwd=tmp_path, after_line="Total params")
    stderr = proc.stderr
    run_b = tmp_path / "lightning_logs" / "version_1"
    assert proc.returncode == 143, stderr[-2000:]
    assert [p.name for p in (run_b / "checkpoints").iterdir()] == ["last.ckpt"]
    expected = (
        f"error: --ckpt_path best: the newest run, {Path('lightning_logs') / 'version_1'}, has no best "
        "checkpoint (by val_acc) yet; use --ckpt_path last or give a .ckpt file"
    )
    assert one_error_line(run_cli("test", "--ckpt_path", "best", cwd=tmp_path, check=False)) == expected
    last = run_cli("test", "--ckpt_path", "last", cwd=tmp_path)  # makes version_2, an evaluation folder
    assert f"Using checkpoint {Path('lightning_logs') / 'version_1' / 'checkpoints' / 'last.ckpt'}" in last.stderr
    assert one_error_line(run_cli("test", "--ckpt_path", "best", cwd=tmp_path, check=False)) == expected


@pytest.mark.slow
def test_a_checkpoint_alone_tests_as_in_its_run(raw_run, tmp_path):
    """A checkpoint copied out of its run folder (no config.yaml beside it) takes the settings saved in it."""
    alone = tmp_path / "alone" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(raw_run["last"], alone)
    tested = run_cli("test", "--ckpt_path", str(alone), cwd=tmp_path, env=no_network_env(tmp_path))
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    assert not (tmp_path / "connections.log").exists()


@pytest.mark.slow
def test_a_run_written_by_an_older_version_still_tests_from_its_checkpoint(raw_run, tmp_path):
    """Older versions saved the DataModule's settings flat in config.yaml, with pixel_scale (now the model's) and
    predict_path/predict_sheet (now PicturesDataModule's): its checkpoints still need no --config."""
    run_dir = tmp_path / "old_run"
    shutil.copytree(raw_run["last"].parents[1], run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"].pop("pixel_scale", None)
    config["data"] = {**config["data"]["init_args"], "pixel_scale": "raw", "predict_path": None, "predict_sheet": None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    tested = run_cli("test", "--ckpt_path", ckpt, cwd=tmp_path, env=no_network_env(tmp_path))
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(raw_run["test_acc"], 4)
    digit = tmp_path / "digit.png"
    Image.fromarray(load_split(config["data"]["data_dir"], "test")[0][0, 0].numpy()).save(digit)
    run_cli(
        "predict", "--ckpt_path", ckpt, "--data", "PicturesDataModule", "--data.predict_path", str(digit), cwd=tmp_path
    )
    rows = list(csv.DictReader((version_dirs(tmp_path)[-1] / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["error"] == "" and rows[0]["pred"] in "0123456789"
