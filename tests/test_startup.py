"""Start-up: what ``python -m mnist_lit`` imports for answers that need no model (mnist_lit.launch).

Each test runs the real command with ``python -X importtime``, which lists on stderr every module the
process imported, and checks that list; timings are in benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import CLOSED_STDOUT, CONFIG, REPO, offline_data, run_cli_streams

HEAVY = {"torch", "lightning", "torchvision", "matplotlib", "tensorboard", "optuna", "fastapi", "onnx", "cv2", "PIL"}


def run_traced(*args: str, cwd) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m mnist_lit ARGS``; returns the process and the top-level packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_lit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc, imported


def test_top_level_help_lists_every_command_without_torch(tmp_path):
    out, imported = run_traced("--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", "cv", "lr_find", "tune", "export", "serve"]
    assert "mnist_lit" in imported and not HEAVY & imported, HEAVY & imported


def test_missing_config_file_is_one_error_line_before_any_import(tmp_path):
    out, imported = run_traced("fit", "--config", "missing.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --config missing.yaml: no such file (python -m mnist_lit fit --help lists the options)"]
    assert not HEAVY & imported, HEAVY & imported
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ("test", "--ckpt_path", "none.ckpt"),
            "error: none.ckpt: no such checkpoint file; give an existing --ckpt_path (or best / last)",
        ),
        (
            ("serve", "--ckpt_path=none.ckpt"),
            "error: none.ckpt: no such checkpoint file; give an existing --ckpt_path (or best / last)",
        ),
        (
            ("fit", "--config", str(CONFIG), "--finetune_from", "none.ckpt"),
            "error: none.ckpt: no such checkpoint file; give an existing --finetune_from",
        ),
        # an unset shell variable ("$CKPT"): never read as "none given" (fit would train from scratch)
        (
            ("fit", "--config", str(CONFIG), "--finetune_from", ""),
            "error: --finetune_from is empty; give a .ckpt file written by fit",
        ),
        (("test", "--ckpt_path="), "error: --ckpt_path is empty; give a .ckpt file written by fit (or best / last)"),
    ],
)
def test_missing_checkpoint_is_one_error_line_before_any_import(tmp_path, args, error):
    out, imported = run_traced(*args, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.splitlines() == [error]
    assert not HEAVY & imported, HEAVY & imported


def test_existing_checkpoint_folder_and_keywords_reach_lightning(tmp_path):
    """A folder (a K-fold run) and best / last are looked up by the CLI, with its own messages."""
    out, imported = run_traced("test", "--ckpt_path", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "lightning" in imported and "no such checkpoint file" not in out.stderr
    out, _ = run_traced("test", "--ckpt_path", "best", cwd=tmp_path)
    assert out.returncode == 2 and "no such checkpoint file" not in out.stderr


def test_config_folder_or_second_missing_config_is_refused_too(tmp_path):
    out, _ = run_traced("cv", "--config", str(CONFIG), "--config", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
        f"error: --config {tmp_path}: a folder, not a file; give a YAML file"
    )
    out, imported = run_traced("fit", "--config", "configs", cwd=REPO)
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
        "error: --config configs: a folder, not a file; give one of its YAML files (configs/best.yaml, "
        "configs/ddp.yaml, configs/fashion_mnist.yaml, configs/fast.yaml, configs/mnist.yaml, configs/multinode.yaml, "
        "configs/robust.yaml, configs/tune.yaml, ...)"  # the first 8 of the folder's 9 files
    )
    assert not HEAVY & imported, HEAVY & imported
    out, _ = run_traced("fit", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert out.stderr.splitlines()[-1].startswith(f"error: --config {tmp_path / 'missing.yaml'}: no such file (")


@pytest.mark.slow
def test_inline_yaml_config_still_reaches_lightning(tmp_path):
    """jsonargparse takes ``--config`` as a file or as YAML settings: the latter is not a missing file."""
    out, imported = run_traced(
        "fit", "--config", str(CONFIG), "--config", "{trainer: {max_epochs: 7}}", "--print_config", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "max_epochs: 7" in out.stdout and "lightning" in imported


def test_extra_commands_help_without_lightning(tmp_path):
    for command in ("cv", "lr_find", "tune", "export", "serve"):
        out, imported = run_traced(command, "--help", cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: python -m mnist_lit {command}")
        assert not HEAVY & imported, (command, HEAVY & imported)


@pytest.mark.slow
def test_fit_help_imports_no_optional_heavy_module(tmp_path):
    """``fit --help`` needs Lightning (its options come from the model's and DataModule's signatures), and
    Lightning brings torchmetrics, torchvision and matplotlib; TensorBoard, OpenCV, Optuna, FastAPI, ONNX stay out."""
    out, imported = run_traced("fit", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "--model.lr" in out.stdout
    assert not {"tensorboard", "cv2", "optuna", "fastapi", "onnx"} & imported


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TensorFlow not installed (pip install -e '.[bench]'): nothing to keep out",
)
@pytest.mark.slow
def test_fit_with_tensorflow_installed_does_not_import_it(tmp_path, mnist_dir):
    """TensorBoard would import all of TensorFlow (seconds) to write the event files (mnist_lit.tensorboard_writer)."""
    out, imported = run_traced(
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tensorboard" in imported and "tensorflow" not in imported
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0")).Reload()
    assert [e.step for e in events.Scalars("val_acc")] == [1] and "val_predictions" in events.Tags()["images"]


def test_stub_is_not_forced_for_remote_log_folders():
    from mnist_lit.tensorboard_writer import use_tensorboard_stub

    assert use_tensorboard_stub(["fit", "--trainer.logger.init_args.save_dir", "gs://bucket/runs"]) is False


@pytest.mark.parametrize(("code", "status", "stderr"), [(None, 0, ""), (3, 3, ""), ("a message", 1, "a message\n")])
def test_leave_runs_exit_handlers_and_flushes_like_a_normal_exit(code, status, stderr):
    """The CLI's exit skips the interpreter's module teardown, not what a normal exit does: atexit handlers run
    (after buffered output), stdout and stderr arrive whole through pipes, and the status is sys.exit's."""
    script = (
        "import atexit, sys\n"
        "from mnist_lit.launch import leave\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('x' * 100000)\n"  # more than a pipe buffer: must be flushed, not lost
        f"leave({code!r})\n"
        "print('never')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == status
    assert proc.stdout == "x" * 100000 + "handler ran\n"
    assert proc.stderr == stderr


@pytest.mark.parametrize("args", [("--help",), ("cv", "--help"), ("serve", "-h")])
def test_help_into_a_closed_stdout_or_a_gone_reader_ends_without_a_traceback(tmp_path, args):
    """``--help >&-``: one error line, exit 1 (sys.stdout is None: an AttributeError traceback before); ``--help |
    head -1`` once head has exited: exit 1 and nothing more, as Python's note on SIGPIPE advises."""
    closed = run_cli_streams(*args, cwd=tmp_path, stdout="closed")
    assert (closed.returncode, closed.stderr.splitlines()) == (1, [CLOSED_STDOUT]), closed.stderr[-2000:]
    gone = run_cli_streams(*args, cwd=tmp_path, stdout="gone")
    assert (gone.returncode, gone.stderr) == (1, ""), gone.stderr[-2000:]


def test_a_closed_stderr_keeps_error_lines_off_stdout_and_the_exit_status(tmp_path):
    """``2>&-``: the error line goes nowhere (print(file=None) would put it on stdout) and the status stays 2 (a flush
    of the missing stream at exit raised AttributeError: exit 1); help still reaches stdout."""
    refused = run_cli_streams("tuen", cwd=tmp_path, stdout="stderr closed")
    assert (refused.returncode, refused.stdout) == (2, "")
    helped = run_cli_streams("--help", cwd=tmp_path, stdout="stderr closed")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m mnist_lit COMMAND")
