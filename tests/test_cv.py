"""K-fold validation (issue 6): stratified folds in the data module and `python -m mnist_lit cv` on real data."""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIG, offline_data, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.cli import main
from mnist_lit.data import MNISTDataModule, fold_indices, load_split
from mnist_lit.errors import DataError
from mnist_lit.runs import data_settings


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cv_three_folds_on_real_subset(tmp_path, mnist_dir):
    """3-fold CV, 1 epoch: folds partition the training file, are stratified, and the summary is right."""
    proc = run_cli(
        "cv",
        "--config",
        str(CONFIG),
        "--folds",
        "3",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "12",
        "--trainer.enable_progress_bar",
        "false",
        *offline_data(mnist_dir),
        cwd=tmp_path,
    )
    run_dir = tmp_path / "lightning_logs" / "cv_0"
    _, labels = load_split(mnist_dir, "train")

    # Which training image each fold validated, as the folds' data modules used them.
    folds = read_csv(run_dir / "folds.csv")
    index = torch.tensor([int(r["index"]) for r in folds])
    fold = torch.tensor([int(r["fold"]) for r in folds])
    assert torch.equal(index.sort().values, torch.arange(len(labels)))  # disjoint, and every index once
    assert torch.equal(torch.tensor([int(r["label"]) for r in folds]), labels[index])
    whole = torch.bincount(labels, minlength=10) / len(labels)
    for k in range(3):
        in_fold = labels[index[fold == k]]
        share = torch.bincount(in_fold, minlength=10) / len(in_fold)
        assert (share - whole).abs().max() < 0.01, f"fold {k} label shares {share} vs {whole}"

    # The table: one row per fold, then mean and sample std of exactly those values.
    table = read_csv(run_dir / "cv_results.csv")
    per_fold = [r for r in table if r["fold"].isdigit()]
    assert [int(r["fold"]) for r in per_fold] == [0, 1, 2]
    accs = [float(r["val_acc"]) for r in per_fold]
    for row, acc in zip(per_fold, accs, strict=False):
        assert int(row["train_size"]) + int(row["val_size"]) == len(labels)
        assert int(row["val_size"]) == int((fold == int(row["fold"])).sum())
        assert 0.5 < acc <= 1.0  # 12 batches already learn far above chance (0.1)
        # The fold's own TensorBoard log holds the same last-epoch val_acc, and its config the fold.
        events = EventAccumulator(str(tmp_path / row["log_dir"]))  # log_dir is relative to the run's cwd
        events.Reload()
        assert events.Scalars("val_acc")[-1].value == pytest.approx(acc, abs=1e-6)
        config = yaml.safe_load((tmp_path / row["log_dir"] / "config.yaml").read_text())
        assert (data_settings(config)["num_folds"], data_settings(config)["fold"]) == (3, int(row["fold"]))
    summary = {r["fold"]: float(r["val_acc"]) for r in table if not r["fold"].isdigit()}
    assert summary["mean"] == pytest.approx(statistics.mean(accs), abs=1e-6)
    assert summary["std"] == pytest.approx(statistics.stdev(accs), abs=1e-6)
    printed = re.search(r"val_acc over 3 folds: ([0-9.]+) ± ([0-9.]+)", proc.stdout)
    assert printed, proc.stdout[-2000:]
    assert float(printed.group(1)) == pytest.approx(statistics.mean(accs), abs=5e-5)
    assert float(printed.group(2)) == pytest.approx(statistics.stdev(accs), abs=5e-5)
    assert statistics.stdev(accs) > 0  # three different models, not one value repeated


def test_folds_are_deterministic_per_seed_and_balanced(mnist_dir):
    _, labels = load_split(mnist_dir, "train")
    first = fold_indices(labels, 5, 2, split_seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, fold_indices(labels, 5, 2, split_seed=7), strict=False))
    assert not torch.equal(first[1], fold_indices(labels, 5, 2, split_seed=8)[1])
    sizes = [len(fold_indices(labels, 5, k)[1]) for k in range(5)]
    assert sizes == [2000] * 5
    for k in range(5):  # each class's count in a fold is within one image of count / 5
        per_class = torch.bincount(labels[fold_indices(labels, 5, k)[1]], minlength=10)
        assert ((per_class - torch.bincount(labels, minlength=10) / 5).abs() <= 1).all()


def test_datamodule_serves_the_fold(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), download=False, num_folds=4, fold=1)
    dm.setup("fit")
    expected_train, expected_val = fold_indices(load_split(mnist_dir, "train")[1], 4, 1)
    assert torch.equal(dm.val_idx, expected_val) and torch.equal(dm.train_idx, expected_train)
    assert len(dm.data_val) == 2500 and len(dm.data_train) == 7500


@pytest.mark.parametrize("kwargs", [{"num_folds": 1}, {"num_folds": 3, "fold": 3}, {"num_folds": 3, "fold": -1}])
def test_bad_fold_arguments_raise(kwargs):
    with pytest.raises(DataError, match="num_folds"):
        MNISTDataModule(**kwargs)


def test_cv_rejects_one_fold(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", "--folds", "1", "--config", str(CONFIG)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --folds must be 2 or more, got 1"
    assert not (tmp_path / "lightning_logs").exists()  # nothing created for a rejected command


def test_cv_without_data_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "cv",
                "--folds",
                "2",
                "--config",
                str(CONFIG),
                "--data.data_dir",
                str(tmp_path / "none"),
                "--data.download",
                "false",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: mnist data not found: put ")
    assert list((tmp_path / "lightning_logs").iterdir()) == []  # the empty cv_0 folder was removed again


def fold_flags(mnist_dir) -> list[str]:
    """A tiny fold: 1 epoch of 6 batches, validated on 4 batches (512 images)."""
    return [
        "--config",
        str(CONFIG),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "6",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        *offline_data(mnist_dir),
    ]


def cv_processes(*argv_lists: list[str], cwd) -> list[subprocess.CompletedProcess]:
    """Start one `python -m mnist_lit cv ...` per argument list at the same time (like a job array); wait for all."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_lit", "cv", *argv],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv in argv_lists
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err)
        for p, (out, err) in zip(procs, outputs, strict=False)
    ]


@pytest.mark.slow
def test_folds_as_separate_jobs_match_one_process(tmp_path, mnist_dir):
    """`cv --folds 3 --fold I` in three processes (two of them at once) + `--collect` == `cv --folds 3`."""
    whole = run_cli("cv", "--folds", "3", *fold_flags(mnist_dir), cwd=tmp_path)
    one_dir = tmp_path / "lightning_logs" / "cv_0"
    assert "val_acc over 3 folds" in whole.stdout

    for proc in cv_processes(
        ["--folds", "3", "--fold", "0", *fold_flags(mnist_dir)],
        ["--folds", "3", "--fold", "2", *fold_flags(mnist_dir)],
        cwd=tmp_path,
    ):
        assert proc.returncode == 0, proc.stderr[-3000:]
    jobs_dir = tmp_path / "lightning_logs" / "cv_3fold"
    missing = run_cli("cv", "--folds", "3", "--collect", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: fold 1 of 3 not finished in {Path('lightning_logs') / 'cv_3fold'} (no fold_K/fold_result.json); "
            "train each with `python -m mnist_lit cv --folds 3 --fold K --name cv_3fold"
        )
    )
    assert not (jobs_dir / "cv_results.csv").exists()

    run_cli("cv", "--folds", "3", "--fold", "1", *fold_flags(mnist_dir), cwd=tmp_path)
    collected = run_cli("cv", "--folds", "3", "--collect", cwd=tmp_path)
    one, jobs = read_csv(one_dir / "cv_results.csv"), read_csv(jobs_dir / "cv_results.csv")
    assert [r["fold"] for r in jobs] == ["0", "1", "2", "mean", "std"]
    for a, b in zip(one, jobs, strict=False):  # same folds, same sizes, same val_acc to the last printed digit
        assert (a["fold"], a["train_size"], a["val_size"], a["val_acc"]) == (
            b["fold"],
            b["train_size"],
            b["val_size"],
            b["val_acc"],
        )
    assert float(one[0]["val_acc"]) != float(one[1]["val_acc"])  # three models, not one value repeated
    assert (one_dir / "folds.csv").read_text() == (jobs_dir / "folds.csv").read_text()
    summary = re.search(r"val_acc over 3 folds: [0-9.]+ ± [0-9.]+", whole.stdout).group(0)
    assert summary in collected.stdout

    again = run_cli("cv", "--folds", "3", "--fold", "1", *fold_flags(mnist_dir), cwd=tmp_path, check=False)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(
        "error: fold 1 is already finished ("
    )
    assert (jobs_dir / "fold_1" / "fold_result.json").is_file()  # kept


@pytest.mark.slow
def test_collect_refuses_folds_trained_with_different_settings(tmp_path, mnist_dir):
    tiny = [*fold_flags(mnist_dir), "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
    for proc in cv_processes(
        ["--folds", "2", "--fold", "0", *tiny],
        ["--folds", "2", "--fold", "1", *tiny, "--model.lr", "0.002"],
        cwd=tmp_path,
    ):
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("cv", "--folds", "2", "--collect", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: folds 0 and 1 in {Path('lightning_logs') / 'cv_2fold'} were trained with "
        "different settings (model.lr: 0.001 vs 0.002); retrain one of them with the "
        "other's flags"
    )


def test_cv_fold_out_of_range_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", "--folds", "3", "--fold", "3", "--config", str(CONFIG)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --fold must be in 0..2 for --folds 3, got 3"
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--folds", "abc"], "argument --folds: invalid int value: 'abc'"),
        (["--fold", "1", "--collect"], "argument --collect: not allowed with argument --fold"),
    ],
)
def test_cv_usage_error_is_usage_then_one_error_line(tmp_path, capsys, monkeypatch, args, message):
    """argparse's own errors too: the usage, then `error: ...` (not `python -m mnist_lit cv: error: ...`), exit 2."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[0].startswith("usage: python -m mnist_lit cv ")
    assert [line for line in err if not line.startswith(" ")] == [
        err[0],
        f"error: {message} (python -m mnist_lit cv --help lists the options)",
    ]
    assert not (tmp_path / "lightning_logs").exists()
