"""Tuning (issue 6): the Optuna search (`tune`) and Lightning's learning-rate finder (`lr_find`) on real data."""

from __future__ import annotations

import csv
import re

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIG, REPO, run_cli, version_dirs
from mnist_lit.cli import main

TUNE_CONFIG = REPO / "configs" / "tune.yaml"
TUNE_CONFIG_SPACE = yaml.safe_load(TUNE_CONFIG.read_text())["search_space"]


def data_flags(mnist_dir) -> list[str]:
    return ["--data.data_dir", str(mnist_dir), "--data.download", "false", "--trainer.enable_progress_bar", "false"]


def test_four_trial_search_and_its_best_config_fits(tmp_path, mnist_dir):
    """4 trials of 1 epoch; the best YAML is a config `fit --config` runs with the best values."""
    tune_config = yaml.safe_load(TUNE_CONFIG.read_text())
    space = tune_config["search_space"]
    space["trainer.max_epochs"] = {"type": "int", "low": 1, "high": 1}
    # Prune from the second trial on, after its first (only) epoch, so that pruning happens in 4 trials.
    tune_config["pruner"] = {"n_startup_trials": 1, "n_warmup_steps": 0}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune_config))
    proc = run_cli("tune", "--tune_config", "tune.yaml", "--n_trials", "4", "--config", str(CONFIG),
                   "--trainer.limit_train_batches", "8", "--trainer.limit_val_batches", "4", *data_flags(mnist_dir),
                   cwd=tmp_path)
    run_dir = tmp_path / "lightning_logs" / "tune_0"
    with open(run_dir / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert [int(t["number"]) for t in trials] == [0, 1, 2, 3]
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and any(t["state"] == "PRUNED" for t in trials), trials
    for t in trials:
        assert int(t["epochs"]) == 1 and 0.0 < float(t["val_acc"]) <= 1.0
        for key, spec in TUNE_CONFIG_SPACE.items():  # every value inside configs/tune.yaml's ranges
            value = float(t[key])
            if spec["type"] == "categorical":
                assert value in spec["choices"]
            elif key != "trainer.max_epochs":
                assert spec["low"] <= value <= spec["high"]
        # The trial ran with those values and logged validation, never the test set.
        trial_config = yaml.safe_load((tmp_path / t["log_dir"] / "config.yaml").read_text())
        assert trial_config["model"]["lr"] == pytest.approx(float(t["model.lr"]))
        assert trial_config["data"]["batch_size"] == int(t["data.batch_size"])
        events = EventAccumulator(str(tmp_path / t["log_dir"]))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert "val_acc" in tags and not any(tag.startswith("test") for tag in tags)
    # A pruned trial's val_acc was below the median of the earlier complete trials' (MedianPruner at epoch 0).
    for i, t in enumerate(trials):
        if t["state"] == "PRUNED":
            earlier = sorted(float(e["val_acc"]) for e in trials[:i] if e["state"] == "COMPLETE")
            median = (earlier[(len(earlier) - 1) // 2] + earlier[len(earlier) // 2]) / 2
            assert float(t["val_acc"]) < median
    best = max(complete, key=lambda t: float(t["val_acc"]))
    assert f"Best: trial {best['number']}, val_acc {float(best['val_acc']):.4f}" in proc.stdout

    best_yaml = run_dir / "best_config.yaml"
    best_config = yaml.safe_load(best_yaml.read_text())
    assert best_config["model"]["lr"] == pytest.approx(float(best["model.lr"]))
    assert best_config["model"]["dropout1"] == pytest.approx(float(best["model.dropout1"]))
    assert best_config["model"]["dropout2"] == pytest.approx(float(best["model.dropout2"]))
    assert best_config["data"]["batch_size"] == int(best["data.batch_size"])
    assert best_config["trainer"]["max_epochs"] == 1

    run_cli("fit", "--config", str(best_yaml), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
            "--test_after_fit", "false", cwd=tmp_path)
    fit_dir = version_dirs(tmp_path)[-1]
    hparams = yaml.safe_load((fit_dir / "hparams.yaml").read_text())
    assert hparams["lr"] == pytest.approx(float(best["model.lr"]))
    assert hparams["dropout1"] == pytest.approx(float(best["model.dropout1"]))
    assert hparams["batch_size"] == int(best["data.batch_size"])
    assert (fit_dir / "checkpoints" / "last.ckpt").is_file()


def test_lr_find_prints_a_suggestion_and_saves_the_plot(tmp_path, mnist_dir):
    proc = run_cli("lr_find", "--config", str(CONFIG), "--num_training", "20", "--min_lr", "1e-5", "--max_lr", "1",
                   *data_flags(mnist_dir), cwd=tmp_path)
    run_dir = tmp_path / "lightning_logs" / "lr_find_0"
    with open(run_dir / "lr_find.csv", newline="") as f:
        rows = [(float(r["lr"]), float(r["loss"])) for r in csv.DictReader(f)]
    lrs = [lr for lr, _ in rows]
    assert 2 <= len(rows) <= 20 and lrs == sorted(lrs) and 1e-5 <= lrs[0] < lrs[-1] <= 1.0
    suggested = re.search(r"Suggested learning rate: ([0-9.e+-]+)", proc.stdout)
    assert suggested, proc.stdout[-2000:]
    assert lrs[0] <= float(suggested.group(1)) <= lrs[-1]
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("search_space, message", [
    ("{}", "needs a non-empty 'search_space'"),
    ("{model.lr: {type: float, low: 0, high: 1, log: true}}", "search_space.model.lr must be"),
    ("{optimizer.lr: {type: float, low: 0.1, high: 1}}", "search_space.optimizer.lr must be"),
])
def test_bad_tune_config_is_one_line_error(tmp_path, capsys, monkeypatch, search_space, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(f"search_space: {search_space}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--tune_config", "bad.yaml", "--config", str(CONFIG)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: bad.yaml: ") and message in err
    assert "\n" not in err and not (tmp_path / "lightning_logs").exists()
