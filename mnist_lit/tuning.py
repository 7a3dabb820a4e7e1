"""The tutorial's §5: K-fold validation (``cv``), Lightning's learning-rate finder (``lr_find``) and an
Optuna search (``tune``).

Each command takes its own few options plus every ``fit`` flag (``--config``, ``--data.*``,
``--model.*``, ``--trainer.*``), parsed by the same LightningCLI as ``fit`` with ``run=False``. So a fold
or a trial is exactly the run ``fit`` would make with those flags, and its ``config.yaml`` can be re-run
with ``fit --config``. None of them touches the test set. Outputs go to one new folder per command run:

    lightning_logs/cv_N/      fold_K/ (TensorBoard, config.yaml, checkpoints/), cv_results.csv, folds.csv
    lightning_logs/tune_N/    trial_K/ (same), trials.csv, best_config.yaml
    lightning_logs/lr_find_N/ lr_find.csv, lr_find.png
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

from mnist_lit.atomic import atomic_write, write_text
from mnist_lit.cli import PROG, build_cli

#: What the extra commands accept beyond their own options.
FIT_FLAGS_NOTE = ("All fit flags are accepted too (--config, --data.*, --model.*, --trainer.*, --seed_everything); "
                  "see `python -m mnist_lit fit --help`.")


class TuneError(ValueError):
    """A ``cv``/``lr_find``/``tune`` option or the tune config is unusable; the message says what to do."""


# ---------------------------------------------------------------------------------------------- helpers

def new_run_dir(log_dir: str | Path, prefix: str) -> Path:
    """Create and return ``log_dir/PREFIX_N`` with the smallest N not yet used (never reuses a folder)."""
    root = Path(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    used = [int(p.name[len(prefix) + 1:]) for p in root.glob(f"{prefix}_*") if p.name[len(prefix) + 1:].isdigit()]
    number = max(used, default=-1) + 1
    while True:
        path = root / f"{prefix}_{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took it in between
            number += 1


@contextlib.contextmanager
def fresh_run_dir(log_dir: str | Path, prefix: str) -> Iterator[Path]:
    """:func:`new_run_dir`, removed again if the command fails before writing any file into it."""
    path = new_run_dir(log_dir, prefix)
    try:
        yield path
    except BaseException:
        if not any(p.is_file() for p in path.rglob("*")):  # only empty folders: nothing to lose
            shutil.rmtree(path, ignore_errors=True)
        raise


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV table atomically (:func:`mnist_lit.atomic.write_text`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def logger_flag(run_dir: Path, version: str) -> str:
    """A ``--trainer.logger`` flag that logs to ``run_dir/version`` with TensorBoard (replaces the config's logger)."""
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(run_dir), "name": "", "version": version}}
    return f"--trainer.logger={json.dumps(logger)}"


def parse_command(prog: str, description: str, add_options: Callable[[argparse.ArgumentParser], None],
                  argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` into this command's own options and the ``fit`` flags passed on to LightningCLI."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {prog}", description=description,
                                     epilog=FIT_FLAGS_NOTE, allow_abbrev=False)
    parser.add_argument("--log_dir", default="lightning_logs",
                        help="Parent folder of the run's new PREFIX_N folder (default: lightning_logs).")
    add_options(parser)
    return parser.parse_known_args(argv)


def fit_val_acc(fit_args: list[str], callbacks: tuple = ()) -> tuple[float, Any]:
    """Build the project's LightningCLI from ``fit_args`` (``run=False``), fit, return (last val_acc, the CLI).

    Raises:
        TuneError: the run logged no ``val_acc`` (e.g. ``--trainer.limit_val_batches 0``).
    """
    cli = build_cli(fit_args, run=False, callbacks=callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    val_acc = cli.trainer.callback_metrics.get("val_acc")
    if val_acc is None:
        raise TuneError("the run logged no val_acc; do not set --trainer.limit_val_batches 0 or "
                        "--trainer.check_val_every_n_epoch above max_epochs")
    return float(val_acc), cli


# ---------------------------------------------------------------------------------------------- cv

def cv_main(argv: list[str]) -> None:
    """``python -m mnist_lit cv --folds K [fit flags]``: train K models, model k validated on fold k.

    Uses :class:`~mnist_lit.data.MNISTDataModule`'s stratified folds (``--data.num_folds K
    --data.fold k``; ``--data.split_seed`` picks the folds). Each fold's ``val_acc`` is the last
    epoch's. Prints and writes ``cv_results.csv`` (``fold, train_size, val_size, val_acc, log_dir``,
    then rows ``mean`` and ``std``: the sample standard deviation, ``ddof=1``) and ``folds.csv``
    (``index, label, fold``: which training image was validated in which fold), both rewritten
    after every fold so an interrupted run keeps what it finished.

    Raises:
        TuneError: ``--folds`` below 2. DataError: unusable data (from the data module).
    """
    opts, fit_args = parse_command(
        "cv", "K-fold cross-validation: train K models, each validated on a different stratified fold.",
        lambda p: p.add_argument("--folds", type=int, default=5, help="K, the number of folds (default: 5)."), argv)
    if opts.folds < 2:
        raise TuneError(f"--folds must be 2 or more, got {opts.folds}")
    with fresh_run_dir(opts.log_dir, "cv") as run_dir:
        rows, fold_rows = [], []
        for fold in range(opts.folds):
            val_acc, cli = fit_val_acc([*fit_args, f"--data.num_folds={opts.folds}", f"--data.fold={fold}",
                                        logger_flag(run_dir, f"fold_{fold}")])
            dm = cli.datamodule
            rows.append([fold, len(dm.train_idx), len(dm.val_idx), f"{val_acc:.6f}", cli.trainer.log_dir])
            fold_rows += [[int(i), int(y), fold] for i, y in zip(dm.val_idx, dm.data_val.labels)]
            accs = torch.tensor([float(r[3]) for r in rows], dtype=torch.float64)
            summary = [["mean", "", "", f"{accs.mean():.6f}", ""]]
            if len(accs) > 1:
                summary.append(["std", "", "", f"{accs.std():.6f}", ""])
            write_csv(run_dir / "cv_results.csv", ["fold", "train_size", "val_size", "val_acc", "log_dir"],
                      rows + summary)
            write_csv(run_dir / "folds.csv", ["index", "label", "fold"], sorted(fold_rows))
            print(f"fold {fold}/{opts.folds}: val_acc {val_acc:.4f}", flush=True)
        print(f"\n{'fold':>4}  {'train':>6}  {'val':>6}  val_acc")
        for fold, n_train, n_val, val_acc, _ in rows:
            print(f"{fold:>4}  {n_train:>6}  {n_val:>6}  {float(val_acc):.4f}")
        print(f"val_acc over {opts.folds} folds: {accs.mean():.4f} ± {accs.std():.4f} (mean ± sample std)")
        print(f"Table: {run_dir / 'cv_results.csv'}")
        print(f"The {opts.folds} fold models as one ensemble (mean of their probabilities): "
              f"{PROG} test --ckpt_path {run_dir}")


# ---------------------------------------------------------------------------------------------- lr_find

def lr_find_main(argv: list[str]) -> None:
    """``python -m mnist_lit lr_find [fit flags]``: Lightning's learning-rate range test.

    Runs :meth:`lightning.pytorch.tuner.Tuner.lr_find` (learning rate grown exponentially from
    ``--min_lr`` to ``--max_lr`` over ``--num_training`` batches, weights restored afterwards), prints
    the suggested learning rate (steepest loss descent) and writes ``lr_find.csv`` (``lr, loss``) and
    ``lr_find.png`` into ``lightning_logs/lr_find_N/``. Nothing is changed in any config.

    Raises:
        TuneError: ``--min_lr``/``--max_lr`` not positive and increasing, or ``--num_training`` < 2.
    """
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--min_lr", type=float, default=1e-6, help="First learning rate tried (default: 1e-6).")
        p.add_argument("--max_lr", type=float, default=1.0, help="Last learning rate tried (default: 1).")
        p.add_argument("--num_training", type=int, default=100, help="Batches, one per learning rate (default: 100).")

    opts, fit_args = parse_command("lr_find", "Lightning's learning-rate finder for the model's RMSprop.",
                                   options, argv)
    if not 0 < opts.min_lr < opts.max_lr:
        raise TuneError(f"need 0 < --min_lr < --max_lr, got {opts.min_lr} and {opts.max_lr}")
    if opts.num_training < 2:
        raise TuneError(f"--num_training must be 2 or more batches, got {opts.num_training}")
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    with fresh_run_dir(opts.log_dir, "lr_find") as run_dir:
        cli = build_cli([*fit_args, logger_flag(run_dir, "")], run=False)
        finder = Tuner(cli.trainer).lr_find(cli.model, datamodule=cli.datamodule, min_lr=opts.min_lr,
                                            max_lr=opts.max_lr, num_training=opts.num_training, update_attr=False)
        suggestion = finder.suggestion()
        write_csv(run_dir / "lr_find.csv", ["lr", "loss"], [[lr, loss] for lr, loss in
                                                              zip(finder.results["lr"], finder.results["loss"])])
        figure = finder.plot(suggest=suggestion is not None)
        with atomic_write(run_dir / "lr_find.png") as handle:
            figure.savefig(handle, format="png", dpi=100)
        if suggestion is None:
            print(f"No learning rate suggested (too few finite losses); see {run_dir / 'lr_find.png'}")
        else:
            print(f"Suggested learning rate: {suggestion:.3g} (try --model.lr {suggestion:.3g}); "
                  f"plot: {run_dir / 'lr_find.png'}")


# ---------------------------------------------------------------------------------------------- tune

def load_tune_config(path: str | Path) -> dict[str, Any]:
    """Read and check a tune config (see ``configs/tune.yaml``).

    Keys: ``n_trials`` (int), ``seed`` (TPE sampler seed), ``pruner`` (``MedianPruner`` keyword
    arguments), ``search_space``: ``{fit flag without --: {type: float|int|categorical, low, high,
    log} or {type: categorical, choices}}``.

    Raises:
        TuneError: missing file, bad YAML, or a search-space entry that cannot be suggested.
    """
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"tune config {path} not found; pass --tune_config PATH (see configs/tune.yaml)")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TuneError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    space = config.get("search_space")
    if not isinstance(space, dict) or not space:
        raise TuneError(f"{path}: needs a non-empty 'search_space' mapping of fit flags to ranges")
    for key, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "categorical":
            ok = isinstance(spec.get("choices"), list) and len(spec["choices"]) > 0
        elif kind in ("float", "int"):
            ok = isinstance(spec.get("low"), (int, float)) and isinstance(spec.get("high"), (int, float)) \
                 and spec["low"] <= spec["high"] and (not spec.get("log") or spec["low"] > 0)
        else:
            ok = False
        if not ok or key.split(".")[0] not in ("model", "data", "trainer", "augment"):
            raise TuneError(f"{path}: search_space.{key} must be a model./data./trainer./augment. flag with "
                            "{type: float|int, low, high[, log]} (low <= high, low > 0 if log) "
                            "or {type: categorical, choices: [...]}")
    return config


def suggest(trial, key: str, spec: dict[str, Any]) -> Any:
    """Ask the Optuna ``trial`` for one value of ``key`` within ``spec`` (see :func:`load_tune_config`)."""
    if spec["type"] == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    if spec["type"] == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"model.lr": 1e-3}`` -> ``{"model": {"lr": 1e-3}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def tune_main(argv: list[str]) -> None:
    """``python -m mnist_lit tune --tune_config configs/tune.yaml [fit flags]``: Optuna search maximising val_acc.

    Each trial is a ``fit`` with the suggested flags appended (TPE sampler, seeded), scored by its
    last epoch's ``val_acc`` on the validation split (never the test set). ``val_acc`` is reported
    to Optuna after every epoch and :class:`optuna.pruners.MedianPruner` stops trials that fall
    below the median of earlier trials at the same epoch (Optuna-integration's
    ``PyTorchLightningPruningCallback``). Writes ``trials.csv`` after every trial (``number, state,
    val_acc, epochs, duration_s``, each parameter, ``log_dir``) and, at the end, ``best_config.yaml``:
    the complete configuration of the best trial, which ``fit --config best_config.yaml`` accepts.

    Raises:
        TuneError: optuna missing, a bad tune config, or no trial completed.
    """
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tune_config", default="configs/tune.yaml",
                       help="Search space, trials, pruner (default: configs/tune.yaml).")
        p.add_argument("--n_trials", type=int, default=None, help="Override the tune config's n_trials.")
        p.add_argument("--timeout", type=float, default=None, help="Stop starting trials after this many seconds.")

    opts, fit_args = parse_command("tune", "Optuna search over the tune config's space, maximising val_acc.",
                                   options, argv)
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError:
        raise TuneError("tune needs optuna and optuna-integration: pip install 'mnist_lit[tune]'") from None
    config = load_tune_config(opts.tune_config)
    n_trials = opts.n_trials if opts.n_trials is not None else int(config.get("n_trials", 20))
    if n_trials < 1:
        raise TuneError(f"n_trials must be 1 or more, got {n_trials}")
    space = config["search_space"]
    parser = build_cli(fit_args, run=False).parser  # checks the fit flags before any trial runs
    with fresh_run_dir(opts.log_dir, "tune") as run_dir:
        log_dirs: dict[int, str] = {}

        def objective(trial) -> float:
            params = {key: suggest(trial, key, spec) for key, spec in space.items()}
            flags = [f"--{key}={value}" for key, value in params.items()]
            log_dirs[trial.number] = str(run_dir / f"trial_{trial.number}")
            val_acc, _ = fit_val_acc([*fit_args, *flags, logger_flag(run_dir, f"trial_{trial.number}")],
                                     callbacks=(PyTorchLightningPruningCallback(trial, monitor="val_acc"),))
            return val_acc

        def write_trials(study, _trial=None) -> None:
            rows = []
            for t in study.trials:
                duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
                value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                             if t.intermediate_values else "")
                rows.append([t.number, t.state.name, value, len(t.intermediate_values), duration,
                             *[t.params.get(key, "") for key in space], log_dirs.get(t.number, "")])
            write_csv(run_dir / "trials.csv", ["number", "state", "val_acc", "epochs", "duration_s", *space, "log_dir"],
                      rows)

        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=config.get("seed", 0)),
                                    pruner=optuna.pruners.MedianPruner(**config.get("pruner", {})))
        study.optimize(objective, n_trials=n_trials, timeout=opts.timeout, callbacks=[write_trials])
        write_trials(study)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise TuneError(f"no trial completed (all pruned or failed); see {run_dir / 'trials.csv'}")
        best = study.best_trial
        best_flags = [f"--{key}={value}" for key, value in best.params.items()]
        best_config = parser.dump(parser.parse_args([*fit_args, *best_flags]), skip_none=False)
        header = (f"# Best of {len(study.trials)} trials (trial {best.number}, val_acc {best.value:.4f}) of "
                  f"`python -m mnist_lit tune`; run it with `python -m mnist_lit fit --config THIS_FILE`.\n"
                  f"# Searched values: {json.dumps(best.params)}\n")
        write_text(run_dir / "best_config.yaml", header + best_config)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        print(f"\n{len(study.trials)} trials: {len(complete)} complete, {pruned} pruned. "
              f"Best: trial {best.number}, val_acc {best.value:.4f}")
        print(yaml.safe_dump(nested(best.params), sort_keys=False).rstrip())
        print(f"Table: {run_dir / 'trials.csv'}\nBest config: {run_dir / 'best_config.yaml'} "
              f"(python -m mnist_lit fit --config {run_dir / 'best_config.yaml'})")
