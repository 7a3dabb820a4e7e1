"""K-fold validation (issue 6): stratified folds in the data module and `python -m mnist_lit cv` on real data."""

from __future__ import annotations

import csv
import re
import statistics

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIG, run_cli
from mnist_lit.cli import main
from mnist_lit.data import DataError, MNISTDataModule, fold_indices, load_split


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cv_three_folds_on_real_subset(tmp_path, mnist_dir):
    """3-fold CV, 1 epoch: folds partition the training file, are stratified, and the summary is right."""
    proc = run_cli("cv", "--config", str(CONFIG), "--folds", "3", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "12", "--trainer.enable_progress_bar", "false",
                   "--data.data_dir", str(mnist_dir), "--data.download", "false", cwd=tmp_path)
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
    for row, acc in zip(per_fold, accs):
        assert int(row["train_size"]) + int(row["val_size"]) == len(labels)
        assert int(row["val_size"]) == int((fold == int(row["fold"])).sum())
        assert 0.5 < acc <= 1.0  # 12 batches already learn far above chance (0.1)
        # The fold's own TensorBoard log holds the same last-epoch val_acc, and its config the fold.
        events = EventAccumulator(str(tmp_path / row["log_dir"]))  # log_dir is relative to the run's cwd
        events.Reload()
        assert events.Scalars("val_acc")[-1].value == pytest.approx(acc, abs=1e-6)
        config = yaml.safe_load((tmp_path / row["log_dir"] / "config.yaml").read_text())
        assert (config["data"]["num_folds"], config["data"]["fold"]) == (3, int(row["fold"]))
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
    assert all(torch.equal(a, b) for a, b in zip(first, fold_indices(labels, 5, 2, split_seed=7)))
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
        main(["cv", "--folds", "2", "--config", str(CONFIG), "--data.data_dir", str(tmp_path / "none"),
              "--data.download", "false", "--trainer.enable_progress_bar", "false"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: mnist data not found: put ")
    assert list((tmp_path / "lightning_logs").iterdir()) == []  # the empty cv_0 folder was removed again
