"""Checkpoints: never half-written (real SIGKILL during saves), loaded with weights_only=True, foreign ones refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIG, run_cli

from mnist_lit.checkpoint import SafeCheckpointIO, load_checkpoint
from mnist_lit.cli import main
from mnist_lit.errors import CheckpointError

SAVER = """
import sys, torch
from mnist_lit.checkpoint import SafeCheckpointIO
io, path = SafeCheckpointIO(), sys.argv[1]
for i in range(1, 10_000):  # ~64 MB each, alternately all 1.0 and all 2.0, until killed
    io.save_checkpoint({"i": i, "state_dict": {"w": torch.full((16_000_000,), float(i % 2 + 1))}}, path)
    print(i, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_partial_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete save exists
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".last.ckpt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.002)  # wait until the next save is under way...
        os.kill(proc.pid, signal.SIGKILL)  # ...and kill it in the middle
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    checkpoint = load_checkpoint(path)  # the last complete save, whole
    w = checkpoint["state_dict"]["w"]
    assert w.shape == (16_000_000,) and torch.all(w == float(checkpoint["i"] % 2 + 1))


def test_safe_checkpoint_io_round_trip_and_no_temporary_left(tmp_path):
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(5.0)}, "epoch": 3}, tmp_path / "sub" / "a.ckpt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.ckpt"]
    assert oct((tmp_path / "sub" / "a.ckpt").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(5.0))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunsCode:
    """Unpickling this runs ``touch PWNED``: what weights_only=True must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli_error(tmp_path, monkeypatch, capsys, *args: str) -> str:
    """Run the CLI in-process in tmp_path; it must exit 2 with exactly one `error:` line, which is returned."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))
    return errors[0]


@pytest.fixture
def common(mnist_dir):
    return ["--config", str(CONFIG), "--data.data_dir", str(mnist_dir), "--data.download", "false"]


def test_checkpoint_with_pickled_object_is_refused_and_never_run(trained_run, tmp_path, monkeypatch, capsys, common):
    checkpoint = torch.load(trained_run["last_ckpt"], weights_only=True)
    marker = tmp_path / "PWNED"
    checkpoint["extra"] = RunsCode(marker)
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    error = cli_error(tmp_path, monkeypatch, capsys, "test", *common, "--ckpt_path", str(tmp_path / "evil.ckpt"))
    assert error.startswith(f"error: {tmp_path / 'evil.ckpt'}: refused, the checkpoint holds a pickled posix.system")
    assert "weights_only=True" in error and not marker.exists()


def test_checkpoint_of_another_architecture_says_so(trained_run, tmp_path, monkeypatch, capsys, common):
    checkpoint = torch.load(trained_run["last_ckpt"], weights_only=True)
    checkpoint["state_dict"]["net.features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a 64-filter first layer
    checkpoint["state_dict"]["net.features.0.bias"] = torch.zeros(64)
    SafeCheckpointIO().save_checkpoint(checkpoint, tmp_path / "wide.ckpt")  # with its own valid checksum
    error = cli_error(tmp_path, monkeypatch, capsys, "validate", *common, "--ckpt_path", str(tmp_path / "wide.ckpt"))
    assert error == (
        f"error: {tmp_path / 'wide.ckpt'}: checkpoint of another architecture (net.features.0.weight is "
        "[64, 1, 3, 3] in the checkpoint but [32, 1, 3, 3] in this MNISTClassifier; 2 tensors of another "
        "shape, 0 missing, 0 unexpected); use a checkpoint trained with this model and its configuration"
    )


def test_checkpoint_of_another_model_class_says_so(trained_run, tmp_path, monkeypatch, capsys, common):
    checkpoint = torch.load(trained_run["last_ckpt"], weights_only=True)
    checkpoint["hyper_parameters"] = {"hidden_units": 256, "lr": 0.01}
    SafeCheckpointIO().save_checkpoint(checkpoint, tmp_path / "other.ckpt")
    error = cli_error(tmp_path, monkeypatch, capsys, "test", *common, "--ckpt_path", str(tmp_path / "other.ckpt"))
    assert "checkpoint of another model: its hyperparameters hidden_units are not arguments of MNISTClassifier" in error


def test_truncated_and_missing_checkpoints(trained_run, tmp_path, monkeypatch, capsys, common):
    data = trained_run["last_ckpt"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    error = cli_error(tmp_path, monkeypatch, capsys, "fit", *common, "--ckpt_path", str(tmp_path / "cut.ckpt"))
    assert f"{tmp_path / 'cut.ckpt'}: damaged or truncated, not a readable PyTorch checkpoint (" in error
    error = cli_error(tmp_path, monkeypatch, capsys, "test", *common, "--ckpt_path", str(tmp_path / "none.ckpt"))
    assert (
        error
        == f"error: {tmp_path / 'none.ckpt'}: no such checkpoint file; give an existing --ckpt_path (or best / last)"
    )
    error = cli_error(tmp_path, monkeypatch, capsys, "test", *common, "--ckpt_path", "last")
    assert error.startswith(
        "error: --ckpt_path last: no last checkpoint found in lightning_logs/ (no version_N folders)"
    )


def test_empty_or_missing_checkpoint_in_a_config_file(tmp_path, monkeypatch, capsys, common):
    """Empty values (an unset variable in a generated config) are refused, never read as "none given"; a missing
    --finetune_from names its own option. The command line's forms are refused before Lightning (test_startup)."""
    (tmp_path / "empty_ckpt.yaml").write_text('ckpt_path: ""\n')
    error = cli_error(tmp_path, monkeypatch, capsys, "test", *common, "--config", str(tmp_path / "empty_ckpt.yaml"))
    assert error == "error: --ckpt_path is empty; give a .ckpt file written by fit (or best / last)"
    error = cli_error(tmp_path, monkeypatch, capsys, "fit", *common, "--config", str(tmp_path / "empty_ckpt.yaml"))
    assert error == "error: --ckpt_path is empty; give a .ckpt file written by fit (or best / last)"
    (tmp_path / "empty_finetune.yaml").write_text('finetune_from: ""\n')
    error = cli_error(tmp_path, monkeypatch, capsys, "fit", *common, "--config", str(tmp_path / "empty_finetune.yaml"))
    assert error == "error: --finetune_from is empty; give a .ckpt file written by fit"
    (tmp_path / "missing_finetune.yaml").write_text(f"finetune_from: {tmp_path / 'none.ckpt'}\n")
    error = cli_error(
        tmp_path, monkeypatch, capsys, "fit", *common, "--config", str(tmp_path / "missing_finetune.yaml")
    )
    assert error == f"error: {tmp_path / 'none.ckpt'}: no such checkpoint file; give an existing --finetune_from"


def test_load_checkpoint_refuses_plain_pickles(tmp_path):
    torch.save({"state_dict": {}, "note": RunsCode(tmp_path / "PWNED")}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_text_file_and_folder_as_checkpoint_get_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    for ckpt, expected in (
        (tmp_path / "notes.txt", "a text file (first line: 'hello'), not a checkpoint"),
        (tmp_path, "is a folder, not a checkpoint file"),
        (Path(os.devnull), "not a regular file, not a checkpoint"),  # it exists: never "no such checkpoint file"
    ):
        proc = run_cli("test", "--config", str(CONFIG), "--ckpt_path", str(ckpt), cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert expected in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_out_of_range_hyperparameter_is_one_line_error(tmp_path):
    proc = run_cli("fit", "--config", str(CONFIG), "--model.lr", "-1", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: model.lr must be > 0, got -1.0"
    assert not (tmp_path / "lightning_logs").exists()
