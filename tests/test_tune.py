"""Tuning (issue 6): the Optuna search (`tune`) and Lightning's learning-rate finder (`lr_find`) on real data."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, REPO, max_logged_step, offline_data, run_cli, version_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.cli import main
from mnist_lit.runs import data_settings

TUNE_CONFIG = REPO / "configs" / "tune.yaml"
TUNE_CONFIG_SPACE = yaml.safe_load(TUNE_CONFIG.read_text())["search_space"]


def data_flags(mnist_dir) -> list[str]:
    return [*offline_data(mnist_dir), "--trainer.enable_progress_bar", "false"]


@pytest.mark.slow
def test_four_trial_search_and_its_best_config_fits(tmp_path, mnist_dir):
    """4 trials of 1 epoch; the best YAML is a config `fit --config` runs with the best values."""
    tune_config = yaml.safe_load(TUNE_CONFIG.read_text())
    space = tune_config["search_space"]
    space["trainer.max_epochs"] = {"type": "int", "low": 1, "high": 1}
    # Prune from the second trial on, after its first (only) epoch, so that pruning happens in 4 trials.
    tune_config["pruner"] = {"n_startup_trials": 1, "n_warmup_steps": 0}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune_config))
    proc = run_cli(
        "tune",
        "--tune_config",
        "tune.yaml",
        "--n_trials",
        "4",
        "--config",
        str(CONFIG),
        "--trainer.limit_train_batches",
        "8",
        "--trainer.limit_val_batches",
        "4",
        *data_flags(mnist_dir),
        cwd=tmp_path,
    )
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
        assert data_settings(trial_config)["batch_size"] == int(t["data.batch_size"])
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
    assert data_settings(best_config)["batch_size"] == int(best["data.batch_size"])
    assert best_config["trainer"]["max_epochs"] == 1

    run_cli(
        "fit",
        "--config",
        str(best_yaml),
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--test_after_fit",
        "false",
        cwd=tmp_path,
    )
    fit_dir = version_dirs(tmp_path)[-1]
    hparams = yaml.safe_load((fit_dir / "hparams.yaml").read_text())
    assert hparams["lr"] == pytest.approx(float(best["model.lr"]))
    assert hparams["dropout1"] == pytest.approx(float(best["model.dropout1"]))
    assert hparams["batch_size"] == int(best["data.batch_size"])
    assert (fit_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_lr_find_prints_a_suggestion_and_saves_the_plot(tmp_path, mnist_dir):
    proc = run_cli(
        "lr_find",
        "--config",
        str(CONFIG),
        "--num_training",
        "20",
        "--min_lr",
        "1e-5",
        "--max_lr",
        "1",
        *data_flags(mnist_dir),
        cwd=tmp_path,
    )
    run_dir = tmp_path / "lightning_logs" / "lr_find_0"
    with open(run_dir / "lr_find.csv", newline="") as f:
        rows = [(float(r["lr"]), float(r["loss"])) for r in csv.DictReader(f)]
    lrs = [lr for lr, _ in rows]
    assert 2 <= len(rows) <= 20 and lrs == sorted(lrs) and 1e-5 <= lrs[0] < lrs[-1] <= 1.0
    suggested = re.search(r"Suggested learning rate: ([0-9.e+-]+)", proc.stdout)
    assert suggested, proc.stdout[-2000:]
    assert lrs[0] <= float(suggested.group(1)) <= lrs[-1]
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "search_space, message",
    [
        ("{}", "needs a non-empty 'search_space'"),
        ("{model.lr: {type: float, low: 0, high: 1, log: true}}", "search_space.model.lr must be"),
        ("{optimizer.lr: {type: float, low: 0.1, high: 1}}", "search_space.optimizer.lr must be"),
    ],
)
def test_bad_tune_config_is_one_line_error(tmp_path, capsys, monkeypatch, search_space, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(f"search_space: {search_space}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--tune_config", "bad.yaml", "--config", str(CONFIG)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: bad.yaml: ") and message in err
    assert "\n" not in err and not (tmp_path / "lightning_logs").exists()


# ---------------------------------------------------------------------------------------------- shared studies

TINY_SPACE = {
    "n_trials": 4,
    "seed": 0,
    "pruner": {"n_startup_trials": 1, "n_warmup_steps": 0},
    "search_space": {
        "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "data.batch_size": {"type": "categorical", "choices": [32, 64]},
        "trainer.max_epochs": {"type": "int", "low": 1, "high": 1},
    },
}


def tiny_tune_args(tmp_path, mnist_dir, storage: str, n_trials: int = 4, space: dict = TINY_SPACE) -> list[str]:
    """A worker of the shared study "s": trials of 1 epoch of 4 batches, validated on 2."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(space))
    return [
        "tune",
        "--tune_config",
        "tiny.yaml",
        "--n_trials",
        str(n_trials),
        "--storage",
        storage,
        "--study_name",
        "s",
        "--config",
        str(CONFIG),
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "2",
        *data_flags(mnist_dir),
    ]


def start_workers(args: list[str], cwd, count: int) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_lit", *args],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err)
        for p, (out, err) in zip(procs, outputs, strict=False)
    ]


def check_shared_study(tmp_path, storage, flag: str, workers: list[subprocess.CompletedProcess]) -> None:
    """Exactly 4 finished trials, each run once by one of the two workers; the best config written.
    ``storage``: the study's storage (URL or object) for Optuna; ``flag``: the workers' ``--storage``."""
    import optuna

    for worker in workers:
        assert worker.returncode == 0, worker.stderr[-3000:]
        assert "Traceback" not in worker.stderr
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # each worker its own samples
    run_dir = tmp_path / "lightning_logs" / "tune_s"
    for t in trials:  # each trial ran once: its own folder, one config, one fit's events
        trial_dir = tmp_path / t.user_attrs["log_dir"]
        assert trial_dir == run_dir / f"trial_{t.number}"
        config = yaml.safe_load((trial_dir / "config.yaml").read_text())
        assert config["model"]["lr"] == pytest.approx(t.params["model.lr"])
        assert len(list(trial_dir.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in run_dir.glob("trial_*")) == [f"trial_{n}" for n in range(4)]
    with open(run_dir / "trials.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["number"]) for r in table] == [0, 1, 2, 3]
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    best_config = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    assert best_config["model"]["lr"] == pytest.approx(best.params["model.lr"])
    assert data_settings(best_config)["batch_size"] == best.params["data.batch_size"]
    # A separate `--report` (no search space, no fit flags) writes and prints the same best trial.
    (run_dir / "best_config.yaml").unlink()
    report = run_cli("tune", "--storage", flag, "--study_name", "s", "--report", cwd=tmp_path)
    assert f"Best: trial {best.number}, val_acc {best.value:.4f}" in report.stdout
    assert yaml.safe_load((run_dir / "best_config.yaml").read_text()) == best_config


@pytest.mark.slow
def test_two_workers_share_a_journal_study(tmp_path, mnist_dir):
    import optuna

    args = tiny_tune_args(tmp_path, mnist_dir, "studies/s.log")  # the folder is created
    workers = finish(start_workers(args, tmp_path, 2))
    journal = str(tmp_path / "studies" / "s.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    check_shared_study(tmp_path, storage, "studies/s.log", workers)

    # A worker with another search space is refused before it runs a trial; the study is unchanged.
    other = {
        **TINY_SPACE,
        "search_space": {**TINY_SPACE["search_space"], "model.dropout1": {"type": "float", "low": 0.0, "high": 0.5}},
    }
    proc = run_cli(*tiny_tune_args(tmp_path, mnist_dir, "studies/s.log", space=other), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        "error: study 's' in studies/s.log searches another space ("
    )
    # A worker started after the total was reached runs nothing.
    proc = run_cli(*tiny_tune_args(tmp_path, mnist_dir, "studies/s.log"), cwd=tmp_path)
    assert "already holds 4 trials; nothing to run" in proc.stdout
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 4


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql: initdb + pg_ctl as a non-root user);
    yields its SQLAlchemy URL and stops it afterwards."""
    import glob
    import shutil
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); .ci/run installs Debian's "
            "postgresql, or: apt-get install postgresql"
        )
    bin_dir = Path(found[-1]).parent
    # The server refuses to run as root: as root, run it as `nobody` in a folder nobody owns.
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="mnist_lit_pg_"))
    data = root / "data"
    if prefix:
        shutil.chown(root, "nobody")
    from mnist_lit.distributed import free_port

    port = free_port()
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, mnist_dir, postgres):
    workers = finish(start_workers(tiny_tune_args(tmp_path, mnist_dir, postgres), tmp_path, 2))
    check_shared_study(tmp_path, postgres, postgres, workers)


@pytest.mark.slow
def test_workers_opening_a_new_postgresql_database_together(postgres):
    """Six workers create Optuna's tables in a new database at once (PostgreSQL's CREATE TABLE race)."""
    import psycopg

    base, _, _ = postgres.rpartition("/")
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE race")
    # Each worker imports everything, says "ready" and waits for "go", so that all open the database at once.
    code = (
        "import sys; import optuna, sqlalchemy; from mnist_lit.commands.storage import open_storage; "
        "print('ready', flush=True); sys.stdin.readline(); "
        "optuna.create_study(storage=open_storage(sys.argv[1]), study_name='s', load_if_exists=True)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"{base}/race"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 6
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors


@pytest.mark.slow
def test_interrupted_worker_loses_only_its_trial_and_the_study_continues(tmp_path, mnist_dir):
    """SIGTERM (a scheduler's preemption) during trial 1; a worker started again completes the study."""
    import optuna

    run_cli(*tiny_tune_args(tmp_path, mnist_dir, "s.log", n_trials=1), cwd=tmp_path)  # trial 0
    args = tiny_tune_args(tmp_path, mnist_dir, "s.log", n_trials=2)
    args += ["--trainer.limit_train_batches", "400", "--trainer.log_every_n_steps", "5"]  # long, and seen early
    (worker,) = start_workers(args, tmp_path, 1)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.log")))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            trials = optuna.load_study(study_name="s", storage=journal).trials
        except KeyError:  # the worker has not created the study yet
            trials = []
        trial_dir = tmp_path / "lightning_logs/tune_s/trial_1"
        if len(trials) == 2 and trials[1].state.name == "RUNNING" and max_logged_step(trial_dir) >= 0:
            break  # trial 1 has trained its first logged steps: inside the fit, whatever the CPU's speed
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    (stopped,) = finish([worker])
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        "tune interrupted (signal 15): trial 1 lost, the others kept in lightning_logs/tune_s/trials.csv; "
        "run the same command again to continue the study"
    )
    assert "Traceback" not in stopped.stderr
    trials = optuna.load_study(study_name="s", storage=journal).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] and trials[1].user_attrs["interrupted"]

    run_cli(*tiny_tune_args(tmp_path, mnist_dir, "s.log", n_trials=2), cwd=tmp_path)
    trials = optuna.load_study(study_name="s", storage=journal).trials
    states = [t.state.name for t in trials]  # trial 0 kept, 1 lost, 2 run instead
    assert states[:2] == ["COMPLETE", "FAIL"] and len(states) == 3 and states[2] in ("COMPLETE", "PRUNED")
    with open(tmp_path / "lightning_logs" / "tune_s" / "trials.csv", newline="") as f:
        assert [r["state"] for r in csv.DictReader(f)] == ["COMPLETE", "INTERRUPTED", states[2]]


@pytest.mark.slow
def test_failing_trials_print_one_line_each(tmp_path, mnist_dir):
    """Issue 16: batch_size choices [0]; each trial fails with one line, no traceback unless --verbose."""
    space = {**TINY_SPACE, "search_space": {"data.batch_size": {"type": "categorical", "choices": [0]}}}
    (tmp_path / "zero.yaml").write_text(yaml.safe_dump(space))
    args = ["tune", "--tune_config", "zero.yaml", "--n_trials", "2", "--config", str(CONFIG), *data_flags(mnist_dir)]
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("trial ", "error:"))]
    assert lines == [
        "trial 0 failed: batch_size must be a positive integer, got 0",
        "trial 1 failed: batch_size must be a positive integer, got 0",
        "error: no trial completed (2 fail); the first failure: batch_size must be a positive integer, "
        "got 0; see lightning_logs/tune_0/trials.csv",
    ]
    verbose = run_cli(*args, "--verbose", cwd=tmp_path, check=False)
    assert verbose.returncode == 2 and verbose.stderr.count("Traceback (most recent call last)") == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--storage", "s.log"], "error: --storage needs --study_name NAME (the same in every worker)"),
        (
            ["--storage", "tiny.yaml", "--study_name", "s"],
            "error: --storage tiny.yaml exists and is not an Optuna journal file; give a new file name (or the journal "
            "the workers share)",
        ),
        (
            ["--storage", "s.log", "--study_name", "a/b"],
            "error: --study_name must be letters, digits, '_', '.', '-' (it names a folder), got 'a/b'",
        ),
        (["--report"], "error: --report needs --storage URL --study_name NAME (the study to report)"),
        (
            ["--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--study_name", "s", "--report"],
            "error: --storage postgresql+psycopg://nobody@127.0.0.1:1/none: cannot open the database (OperationalError: ",
        ),
    ],
)
def test_bad_storage_flags_are_one_line(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--tune_config", "tiny.yaml", *flags, "--config", str(CONFIG)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(message) and "\n" not in err, err
    assert yaml.safe_load((tmp_path / "tiny.yaml").read_text()) == TINY_SPACE  # never written to
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["tune", "--n_trials", "many"], "argument --n_trials: invalid int value: 'many'"),
        (["tune", "--timeout"], "argument --timeout: expected one argument"),
        (["lr_find", "--min_lr", "small"], "argument --min_lr: invalid float value: 'small'"),
    ],
)
def test_usage_error_is_usage_then_one_error_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[0].startswith(f"usage: python -m mnist_lit {args[0]} ")
    assert [line for line in err if not line.startswith(" ")] == [
        err[0],
        f"error: {message} (python -m mnist_lit {args[0]} --help lists the options)",
    ]
    assert not (tmp_path / "lightning_logs").exists()


def test_data_error_stops_the_study_at_its_first_trial(tmp_path, capsys, monkeypatch):
    """No data and no download: the first trial's fit fails with the DataError every trial would meet; the search
    stops there with that one line (no 'trial N failed' lines), its trial recorded as failed in trials.csv."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    args = ["tune", "--tune_config", "tiny.yaml", "--n_trials", "3", "--config", str(CONFIG)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data.data_dir", str(tmp_path / "none"), "--data.download", "false"])
    err = capsys.readouterr().err
    missing = "mnist data not found: put train-images-idx3-ubyte.gz, "
    assert exit_info.value.code == 2 and "Traceback" not in err and "failed" not in err
    assert [line for line in err.splitlines() if line.startswith(("trial ", "error:"))] == [
        next(line for line in err.splitlines() if line.startswith(f"error: {missing}"))
    ]
    assert f"in {tmp_path / 'none' / 'MNIST' / 'raw'}/ or set --data.download true" in err
    with open(tmp_path / "lightning_logs" / "tune_0" / "trials.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["number"] == "0" and row["state"] == "FAIL" and row["error"].startswith(missing)
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "tune_0").iterdir()) == ["trials.csv"]
