"""The tutorial's §5: K-fold validation (``cv``), Lightning's learning-rate finder (``lr_find``) and an
Optuna search (``tune``).

Each command takes its own few options plus every ``fit`` flag (``--config``, ``--data.*``,
``--model.*``, ``--trainer.*``), parsed by the same LightningCLI as ``fit`` with ``run=False``. So a fold
or a trial is exactly the run ``fit`` would make with those flags, and its ``config.yaml`` can be re-run
with ``fit --config``. None of them touches the test set. Outputs go to one new folder per command run:

    lightning_logs/cv_N/      fold_K/ (TensorBoard, config.yaml, checkpoints/, fold_result.json), cv_results.csv,
                              folds.csv; `cv --fold I` and `--collect` use lightning_logs/cv_Kfold/ (or --name)
    lightning_logs/tune_N/    trial_K/ (same), trials.csv, best_config.yaml
    lightning_logs/lr_find_N/ lr_find.csv, lr_find.png
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import shutil
import signal
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnist_lit.atomic import atomic_write, write_text
from mnist_lit.command_line import PROG
from mnist_lit.errors import MnistLitError, TuneError

if TYPE_CHECKING:
    import torch

#: What the extra commands accept beyond their own options.
FIT_FLAGS_NOTE = (
    "All fit flags are accepted too (--config, --data.*, --model.*, --trainer.*, --seed_everything); "
    "see `python -m mnist_lit fit --help`."
)


# ---------------------------------------------------------------------------------------------- helpers


def new_run_dir(log_dir: str | Path, prefix: str) -> Path:
    """Create and return ``log_dir/PREFIX_N`` with the smallest N not yet used (never reuses a folder)."""
    root = Path(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    used = [int(p.name[len(prefix) + 1 :]) for p in root.glob(f"{prefix}_*") if p.name[len(prefix) + 1 :].isdigit()]
    number = max(used, default=-1) + 1
    while True:
        path = root / f"{prefix}_{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took it in between
            number += 1


@contextlib.contextmanager
def fresh_run_dir(log_dir: str | Path, prefix: str, name: str | None = None) -> Iterator[Path]:
    """:func:`new_run_dir` (or ``log_dir/name``, refused if it exists: never mixed into), removed again if
    the command fails before writing any file into it."""
    if name is None:
        path = new_run_dir(log_dir, prefix)
    else:
        path = Path(log_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise TuneError(f"{path} exists already; give another --name or delete it") from None
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
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(run_dir), "name": "", "version": version},
    }
    return f"--trainer.logger={json.dumps(logger)}"


def build_cli(*args, **kwargs):
    """:func:`mnist_lit.cli.build_cli`, imported when a run is built: these commands' ``--help`` needs no Lightning."""
    from mnist_lit.cli import build_cli as build

    return build(*args, **kwargs)


def parse_command(
    prog: str, description: str, add_options: Callable[[argparse.ArgumentParser], None], argv: list[str]
) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` into this command's own options and the ``fit`` flags passed on to LightningCLI."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {prog}", description=description, epilog=FIT_FLAGS_NOTE, allow_abbrev=False
    )
    parser.add_argument(
        "--log_dir",
        default="lightning_logs",
        help="Parent folder of the run's new PREFIX_N folder (default: lightning_logs).",
    )
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
        raise TuneError(
            "the run logged no val_acc; do not set --trainer.limit_val_batches 0 or "
            "--trainer.check_val_every_n_epoch above max_epochs"
        )
    return float(val_acc), cli


# ---------------------------------------------------------------------------------------------- cv

#: Fit flags that may differ between folds trained as separate jobs (where the data lies, how it is read);
#: every other setting must be the same in all folds for ``cv --collect`` to average them.
PER_JOB_SETTINGS = {
    "data.data_dir",
    "data.download",
    "data.num_workers",
    "data.pin_memory",
    "data.fold",
    "trainer.logger",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
}

FOLD_RESULT = "fold_result.json"  # fold_K/fold_result.json: written last, so a fold with it is finished


def fold_settings(cli) -> dict[str, Any]:
    """The parsed fit configuration of a fold as flat ``{"data.batch_size": 128, ...}``, minus :data:`PER_JOB_SETTINGS`."""
    config = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and prefix not in PER_JOB_SETTINGS:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        elif prefix not in PER_JOB_SETTINGS:
            flat[prefix] = node

    walk(config, "")
    return flat


def run_fold(run_dir: Path, folds: int, fold: int, fit_args: list[str]) -> dict[str, Any]:
    """Train fold ``fold`` of ``folds`` into ``run_dir/fold_K/`` and write its ``fold_result.json``.

    Returns:
        the result: ``fold, folds, train_size, val_size, val_acc`` (last epoch), ``log_dir``,
        ``val_index``/``val_label`` (the training images it validated), ``settings`` (:func:`fold_settings`).
    """
    val_acc, cli = fit_val_acc(
        [*fit_args, f"--data.num_folds={folds}", f"--data.fold={fold}", logger_flag(run_dir, f"fold_{fold}")]
    )
    dm = cli.datamodule
    result = {
        "fold": fold,
        "folds": folds,
        "train_size": len(dm.train_idx),
        "val_size": len(dm.val_idx),
        "val_acc": val_acc,
        "log_dir": str(cli.trainer.log_dir),
        "val_index": dm.val_idx.tolist(),
        "val_label": dm.data_val.labels.tolist(),
        "settings": fold_settings(cli),
    }
    write_text(run_dir / f"fold_{fold}" / FOLD_RESULT, json.dumps(result))
    return result


def read_fold_results(run_dir: Path, folds: int) -> list[dict[str, Any]]:
    """The ``fold_result.json`` of folds ``0..folds-1`` in ``run_dir``, checked to belong to one K-fold run.

    Raises:
        TuneError: a fold is missing (named, with the command that trains it), was trained for another
            K, or with other settings than fold 0 (the first differing flag is named).
    """
    missing = [k for k in range(folds) if not (run_dir / f"fold_{k}" / FOLD_RESULT).is_file()]
    if missing:
        names = ", ".join(map(str, missing))
        raise TuneError(
            f"fold{'s' if len(missing) > 1 else ''} {names} of {folds} not finished in {run_dir} "
            f"(no fold_K/{FOLD_RESULT}); train each with `{PROG} cv --folds {folds} --fold K "
            f"--name {run_dir.name} [the same fit flags]`"
        )
    results = [json.loads((run_dir / f"fold_{k}" / FOLD_RESULT).read_text()) for k in range(folds)]
    first = results[0]
    for result in results[1:]:
        if result["folds"] != folds:
            raise TuneError(
                f"{run_dir}/fold_{result['fold']} was trained as one of {result['folds']} folds, not {folds}"
            )
        differing = sorted(
            key
            for key in first["settings"].keys() | result["settings"].keys()
            if first["settings"].get(key) != result["settings"].get(key)
        )
        if differing:
            key = differing[0]
            raise TuneError(
                f"folds 0 and {result['fold']} in {run_dir} were trained with different settings "
                f"({key}: {first['settings'].get(key)!r} vs {result['settings'].get(key)!r}); "
                f"retrain one of them with the other's flags"
            )
    return results


def write_cv_tables(run_dir: Path, results: list[dict[str, Any]]) -> torch.Tensor:
    """Write ``cv_results.csv`` and ``folds.csv`` for the finished ``results``; returns their val_acc (float64)."""
    import torch  # here, not at the top: `cv --help` and its usage errors need no torch (mnist_lit.launch)

    rows = [[r["fold"], r["train_size"], r["val_size"], f"{r['val_acc']:.6f}", r["log_dir"]] for r in results]
    accs = torch.tensor([float(row[3]) for row in rows], dtype=torch.float64)
    summary = [["mean", "", "", f"{accs.mean():.6f}", ""]]
    if len(accs) > 1:
        summary.append(["std", "", "", f"{accs.std():.6f}", ""])
    write_csv(run_dir / "cv_results.csv", ["fold", "train_size", "val_size", "val_acc", "log_dir"], rows + summary)
    fold_rows = sorted([i, y, r["fold"]] for r in results for i, y in zip(r["val_index"], r["val_label"], strict=False))
    write_csv(run_dir / "folds.csv", ["index", "label", "fold"], fold_rows)
    return accs


def print_cv_summary(run_dir: Path, results: list[dict[str, Any]], accs: torch.Tensor) -> None:
    """Print the per-fold table, the mean ± sample std of ``accs`` and the ensemble command."""
    print(f"\n{'fold':>4}  {'train':>6}  {'val':>6}  val_acc")
    for r in results:
        print(f"{r['fold']:>4}  {r['train_size']:>6}  {r['val_size']:>6}  {r['val_acc']:.4f}")
    print(f"val_acc over {len(results)} folds: {accs.mean():.4f} ± {accs.std():.4f} (mean ± sample std)")
    print(f"Table: {run_dir / 'cv_results.csv'}")
    print(
        f"The {len(results)} fold models as one ensemble (mean of their probabilities): "
        f"{PROG} test --ckpt_path {run_dir}"
    )


def cv_main(argv: list[str]) -> None:
    """``python -m mnist_lit cv --folds K [--fold I | --collect] [--name NAME] [fit flags]``: K-fold validation.

    Uses :class:`~mnist_lit.data.MNISTDataModule`'s stratified folds (``--data.num_folds K
    --data.fold k``; ``--data.split_seed`` picks the folds, so they are the same in every process).
    Each fold's ``val_acc`` is the last epoch's. Three ways to run:

    * ``cv --folds K``: the K folds one after the other in a new ``lightning_logs/cv_N/``;
    * ``cv --folds K --fold I``: fold I only, into ``lightning_logs/NAME/fold_I/`` (``--name``, default
      ``cv_Kfold``), for job arrays: one fold per job, GPU or node;
    * ``cv --folds K --collect``: the tables of the finished folds in ``NAME``.

    The tables are ``cv_results.csv`` (``fold, train_size, val_size, val_acc, log_dir``, then rows
    ``mean`` and ``std``: the sample standard deviation, ``ddof=1``) and ``folds.csv`` (``index, label,
    fold``: which training image was validated in which fold); the one-process run rewrites them after
    every fold, so an interrupted run keeps what it finished.

    Raises:
        TuneError: ``--folds`` below 2, ``--fold`` outside ``0..K-1``, a fold already finished, or (collect)
            a missing fold or folds trained with different settings. DataError: unusable data.
    """

    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--folds", type=int, default=5, help="K, the number of folds (default: 5).")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument(
            "--fold", type=int, default=None, help="Train only this fold (0..K-1), e.g. one job of a job array."
        )
        mode.add_argument(
            "--collect",
            action="store_true",
            help="Write cv_results.csv and folds.csv from the folds trained with --fold.",
        )
        p.add_argument(
            "--name",
            default=None,
            help="Run folder under --log_dir shared by --fold and --collect (default: cv_Kfold; "
            "without --fold/--collect: a new cv_N).",
        )

    opts, fit_args = parse_command(
        "cv", "K-fold cross-validation: train K models, each validated on a different stratified fold.", options, argv
    )
    if opts.folds < 2:
        raise TuneError(f"--folds must be 2 or more, got {opts.folds}")
    if opts.fold is not None and not 0 <= opts.fold < opts.folds:
        raise TuneError(f"--fold must be in 0..{opts.folds - 1} for --folds {opts.folds}, got {opts.fold}")
    if opts.name is not None and (not opts.name or Path(opts.name).name != opts.name or opts.name in (".", "..")):
        raise TuneError(f"--name must be a folder name without '/', got {opts.name!r}")
    if opts.fold is None and not opts.collect:
        cv_in_one_process(opts, fit_args)
        return
    run_dir = Path(opts.log_dir) / (opts.name or f"cv_{opts.folds}fold")
    if opts.collect:
        if fit_args:
            raise TuneError(f"--collect reads the folds' results and takes no fit flags, got {' '.join(fit_args)}")
        results = read_fold_results(run_dir, opts.folds)
        print_cv_summary(run_dir, results, write_cv_tables(run_dir, results))
        return
    done = run_dir / f"fold_{opts.fold}" / FOLD_RESULT
    if done.is_file():
        raise TuneError(
            f"fold {opts.fold} is already finished ({done}); delete {done.parent} to train it again, "
            f"or give another --name"
        )
    if done.parent.exists():  # an earlier attempt that did not finish (killed, preempted): start it afresh
        print(f"Removing the unfinished earlier attempt {done.parent}", flush=True)
        shutil.rmtree(done.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = run_fold(run_dir, opts.folds, opts.fold, fit_args)
    print(
        f"fold {opts.fold}/{opts.folds}: val_acc {result['val_acc']:.4f} ({done})\n"
        f"When all {opts.folds} folds are done: {PROG} cv --folds {opts.folds} --collect --name {run_dir.name}"
        + (f" --log_dir {opts.log_dir}" if opts.log_dir != "lightning_logs" else "")
    )


def cv_in_one_process(opts: argparse.Namespace, fit_args: list[str]) -> None:
    """The K folds one after the other in a new run folder, tables rewritten after each fold."""
    with fresh_run_dir(opts.log_dir, "cv", opts.name) as run_dir:
        results = []
        for fold in range(opts.folds):
            results.append(run_fold(run_dir, opts.folds, fold, fit_args))
            accs = write_cv_tables(run_dir, results)
            print(f"fold {fold}/{opts.folds}: val_acc {results[-1]['val_acc']:.4f}", flush=True)
        print_cv_summary(run_dir, results, accs)


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

    opts, fit_args = parse_command(
        "lr_find", "Lightning's learning-rate finder for the model's RMSprop.", options, argv
    )
    if not 0 < opts.min_lr < opts.max_lr:
        raise TuneError(f"need 0 < --min_lr < --max_lr, got {opts.min_lr} and {opts.max_lr}")
    if opts.num_training < 2:
        raise TuneError(f"--num_training must be 2 or more batches, got {opts.num_training}")
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    with fresh_run_dir(opts.log_dir, "lr_find") as run_dir:
        cli = build_cli([*fit_args, logger_flag(run_dir, "")], run=False)
        finder = Tuner(cli.trainer).lr_find(
            cli.model,
            datamodule=cli.datamodule,
            min_lr=opts.min_lr,
            max_lr=opts.max_lr,
            num_training=opts.num_training,
            update_attr=False,
        )
        suggestion = finder.suggestion()
        write_csv(
            run_dir / "lr_find.csv",
            ["lr", "loss"],
            [[lr, loss] for lr, loss in zip(finder.results["lr"], finder.results["loss"], strict=False)],
        )
        figure = finder.plot(suggest=suggestion is not None)
        with atomic_write(run_dir / "lr_find.png") as handle:
            figure.savefig(handle, format="png", dpi=100)
        if suggestion is None:
            print(f"No learning rate suggested (too few finite losses); see {run_dir / 'lr_find.png'}")
        else:
            print(
                f"Suggested learning rate: {suggestion:.3g} (try --model.lr {suggestion:.3g}); "
                f"plot: {run_dir / 'lr_find.png'}"
            )


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
            ok = (
                isinstance(spec.get("low"), (int, float))
                and isinstance(spec.get("high"), (int, float))
                and spec["low"] <= spec["high"]
                and (not spec.get("log") or spec["low"] > 0)
            )
        else:
            ok = False
        if not ok or key.split(".")[0] not in ("model", "data", "trainer", "augment"):
            raise TuneError(
                f"{path}: search_space.{key} must be a model./data./trainer./augment. flag with "
                "{type: float|int, low, high[, log]} (low <= high, low > 0 if log) "
                "or {type: categorical, choices: [...]}"
            )
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


class _TrialNotRun(Exception):
    """A trial this worker stopped (interrupted, or beyond the total); recorded in the study, not an error."""


class _TrialFailed(Exception):
    """A trial whose run raised; its one-line message is already printed and recorded in the study."""


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (errors of this project: the message alone, already one line)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, MnistLitError) else f"{type(err).__name__}: {text}"


@contextlib.contextmanager
def signals_interrupt() -> Iterator[dict[str, int]]:
    """SIGINT and SIGTERM (a scheduler's preemption) raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C
    does, so the running trial is recorded as interrupted; yields ``{"signal": number}`` once one arrived."""
    received: dict[str, int] = {}

    def handler(signum, _frame):
        received["signal"] = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def tune_options(p: argparse.ArgumentParser) -> None:
    """Add the options of ``tune`` (search space file, trials, storage, study name, report) to ``p``."""
    p.add_argument(
        "--tune_config", default="configs/tune.yaml", help="Search space, trials, pruner (default: configs/tune.yaml)."
    )
    p.add_argument(
        "--n_trials",
        type=int,
        default=None,
        help="Override the tune config's n_trials; with --storage the total over all workers.",
    )
    p.add_argument("--timeout", type=float, default=None, help="Stop starting trials after this many seconds.")
    p.add_argument(
        "--storage",
        default=None,
        help="Share the study with other workers: a journal file path (one machine or a shared file "
        "system) or a database URL (postgresql+psycopg://USER@HOST/DB, sqlite:///FILE.db).",
    )
    p.add_argument("--study_name", default=None, help="The shared study's name (the same in every worker).")
    p.add_argument(
        "--report",
        action="store_true",
        help="With --storage: only write trials.csv and best_config.yaml of the study, run nothing.",
    )
    p.add_argument("--verbose", action="store_true", help="Print the traceback of a trial that fails.")


def tune_main(argv: list[str]) -> None:
    """``python -m mnist_lit tune --tune_config configs/tune.yaml [--storage URL --study_name NAME] [fit flags]``.

    An Optuna search maximising val_acc. Each trial is a ``fit`` with the suggested flags appended,
    scored by its last epoch's ``val_acc`` on the validation split (never the test set). ``val_acc`` is
    reported to Optuna after every epoch and :class:`optuna.pruners.MedianPruner` stops trials that fall
    below the median of earlier trials at the same epoch (optuna-integration's
    ``PyTorchLightningPruningCallback``). A trial that fails prints one line (its traceback with
    ``--verbose``) and the search goes on.

    Without ``--storage`` the study lives in this process (TPE sampler seeded by the tune config) and
    writes into a new ``lightning_logs/tune_N/``. With ``--storage`` (see :mod:`mnist_lit.storage`) any
    number of workers started with the same ``--study_name`` share it and write into
    ``lightning_logs/tune_NAME/``: ``--n_trials`` is the total over all of them, pruning compares with
    every worker's trials, each worker samples with its own seed (TPE with ``constant_liar``), and a
    stopped worker (Ctrl-C, SIGTERM) loses only its running trial, which restarting any worker runs again.

    Writes ``trials.csv`` after every trial (``number, state, val_acc, epochs, duration_s``, each parameter,
    ``worker``, ``log_dir``) and at the end ``best_config.yaml``: the complete configuration of the best
    trial, which ``fit --config best_config.yaml`` accepts. ``--report`` writes both without running.

    Raises:
        TuneError: optuna missing, a bad tune config, an unusable ``--storage``, a study of another search
            space, no trial completed.
    """
    opts, fit_args = parse_command(
        "tune", "Optuna search over the tune config's space, maximising val_acc.", tune_options, argv
    )
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError:
        raise TuneError("tune needs optuna and optuna-integration: pip install 'mnist_lit[tune]'") from None
    from mnist_lit import storage as st

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    if opts.storage is not None and not opts.study_name:
        raise TuneError("--storage needs --study_name NAME (the same in every worker)")
    if opts.study_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", opts.study_name):
        raise TuneError(
            f"--study_name must be letters, digits, '_', '.', '-' (it names a folder), got {opts.study_name!r}"
        )
    if opts.report:
        if opts.storage is None:
            raise TuneError("--report needs --storage URL --study_name NAME (the study to report)")
        storage = open_storage(opts.storage)
        try:
            study = optuna.load_study(study_name=opts.study_name, storage=storage)
        except KeyError:
            names = optuna.get_all_study_names(storage)
            raise TuneError(
                f"no study {opts.study_name!r} in {opts.storage} (it holds: "
                f"{', '.join(names) if names else 'no study'})"
            ) from None
        run_dir = Path(opts.log_dir) / f"tune_{opts.study_name}"
        report_study(study, run_dir)
        return
    config = load_tune_config(opts.tune_config)
    n_trials = opts.n_trials if opts.n_trials is not None else int(config.get("n_trials", 20))
    if n_trials < 1:
        raise TuneError(f"n_trials must be 1 or more, got {n_trials}")
    space = config["search_space"]
    storage = None if opts.storage is None else open_storage(opts.storage)
    parser = build_cli(fit_args, run=False).parser  # checks the fit flags before any trial runs
    pruner = optuna.pruners.MedianPruner(**config.get("pruner", {}))
    if storage is None:
        run_context = fresh_run_dir(opts.log_dir, "tune")
        sampler = optuna.samplers.TPESampler(seed=config.get("seed", 0))
    else:
        run_dir = Path(opts.log_dir) / f"tune_{opts.study_name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        run_context = contextlib.nullcontext(run_dir)
        # Every worker its own seed (the same one would suggest the same values in every worker).
        seed = zlib.crc32(f"{config.get('seed', 0)}:{st.WORKER_ID}".encode())
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    with run_context as run_dir:
        study = optuna.create_study(
            storage=storage,
            study_name=opts.study_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        check_study(study, space, opts.storage)
        if storage is not None:
            for number in st.fail_dead_local_trials(study, storage):
                print(f"trial {number}: its worker on this machine is gone; marked interrupted", file=sys.stderr)
        run_trials(study, space, fit_args, parser, run_dir, n_trials, opts, PyTorchLightningPruningCallback)
        report_study(study, run_dir)


def open_storage(url: str):
    """:func:`mnist_lit.storage.open_storage`, its refusal as a :class:`TuneError` (one ``error:`` line)."""
    from mnist_lit import storage as st

    try:
        return st.open_storage(url)
    except st.StorageError as err:
        raise TuneError(str(err)) from None


def check_study(study, space: dict[str, Any], storage: str | None) -> None:
    """Record the search space in a new study; refuse to join one of another space or direction."""
    import optuna

    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {study.study_name!r} in {storage} minimises; give another --study_name")
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", space)
    elif recorded != json.loads(json.dumps(space)):
        raise TuneError(
            f"study {study.study_name!r} in {storage} searches another space ({json.dumps(recorded)}); "
            "use its tune config or another --study_name"
        )


def run_trials(study, space, fit_args, parser, run_dir: Path, n_trials: int, opts, pruning_callback) -> None:
    """This worker's share of the study: trials until ``n_trials`` counted trials exist (all workers)."""
    import optuna

    from mnist_lit import storage as st

    if len(st.counted_trials(study)) >= n_trials:
        print(f"Study {study.study_name!r} already holds {n_trials} trials; nothing to run", flush=True)
        return

    def objective(trial) -> float:
        if opts.storage is not None and st.is_surplus(study, trial, n_trials):
            trial.set_user_attr(st.SURPLUS, True)  # two workers asked at once: beyond the total, not run
            study.stop()
            raise _TrialNotRun
        params = {key: suggest(trial, key, spec) for key, spec in space.items()}
        flags = [f"--{key}={value}" for key, value in params.items()]
        log_dir = run_dir / f"trial_{trial.number}"
        trial.set_user_attr(st.WORKER, st.WORKER_ID)
        trial.set_user_attr(st.LOG_DIR, str(log_dir))
        try:
            trial.set_user_attr(st.CONFIG, parser.dump(parser.parse_args([*fit_args, *flags]), skip_none=False))
            val_acc, _ = fit_val_acc(
                [*fit_args, *flags, logger_flag(run_dir, log_dir.name)],
                callbacks=(pruning_callback(trial, monitor="val_acc"),),
            )
            return val_acc
        except optuna.TrialPruned:
            raise
        except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into SystemExit(1)
            if received or isinstance(err, KeyboardInterrupt):
                received.setdefault("signal", signal.SIGINT)
                trial.set_user_attr(st.INTERRUPTED, f"signal {received['signal']}")
                study.stop()
                raise _TrialNotRun from None
            message = f"the run exited with status {err.code}"  # e.g. a suggested value its parser refused
            trial.set_user_attr(st.ERROR, message)
            print(f"trial {trial.number} failed: {message}", file=sys.stderr, flush=True)
            raise _TrialFailed from None
        except Exception as err:
            message = one_line(err)
            trial.set_user_attr(st.ERROR, message)
            print(f"trial {trial.number} failed: {message}", file=sys.stderr, flush=True)
            if opts.verbose:
                traceback.print_exc()
            raise _TrialFailed from None

    def after_trial(study, trial) -> None:
        if trial.user_attrs.get(st.SURPLUS):
            return
        state = st.trial_state(trial)
        if state == "COMPLETE":
            print(f"trial {trial.number}: val_acc {trial.value:.4f} {json.dumps(trial.params)}", flush=True)
        elif state == "PRUNED":
            print(
                f"trial {trial.number}: pruned after epoch {max(trial.intermediate_values, default=0) + 1}", flush=True
            )
        write_trials(study, run_dir)

    with signals_interrupt() as received:
        try:
            study.optimize(
                objective,
                n_trials=None if opts.storage else n_trials,
                timeout=opts.timeout,
                callbacks=[st.TotalTrials(n_trials), after_trial],
                catch=(_TrialNotRun, _TrialFailed),
            )
        except KeyboardInterrupt:
            received.setdefault("signal", signal.SIGINT)
        if received:
            write_trials(study, run_dir)
            lost = [
                t.number
                for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get(st.INTERRUPTED, "").startswith("signal")
                and t.user_attrs.get(st.WORKER) == st.WORKER_ID
            ]
            print(
                f"tune interrupted (signal {received['signal']}): trial{'s' if len(lost) != 1 else ''} "
                f"{', '.join(map(str, lost)) or 'none'} lost, the others kept in {run_dir / 'trials.csv'}"
                + ("; run the same command again to continue the study" if opts.storage else ""),
                file=sys.stderr,
            )
            sys.exit(128 + int(received["signal"]))


def write_trials(study, run_dir: Path) -> list:
    """Write ``trials.csv`` (see :func:`tune_main`) for the study's trials; returns them (surplus ones left out)."""
    from mnist_lit import storage as st

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(st.SURPLUS)]
    names = st.study_params(trials)
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
        value = (
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else "")
        )
        rows.append(
            [
                t.number,
                st.trial_state(t),
                value,
                len(t.intermediate_values),
                duration,
                *[t.params.get(key, "") for key in names],
                t.user_attrs.get(st.WORKER, ""),
                t.user_attrs.get(st.LOG_DIR, ""),
                t.user_attrs.get(st.ERROR, ""),
            ]
        )
    write_csv(
        run_dir / "trials.csv",
        ["number", "state", "val_acc", "epochs", "duration_s", *names, "worker", "log_dir", "error"],
        rows,
    )
    return trials


def report_study(study, run_dir: Path) -> None:
    """Write ``trials.csv`` and ``best_config.yaml`` of the study into ``run_dir`` and print the summary.

    Raises:
        TuneError: no trial of the study completed.
    """
    import optuna

    from mnist_lit import storage as st

    trials = write_trials(study, run_dir)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = [st.trial_state(t) for t in trials]
    counts = ", ".join(
        f"{states.count(name)} {name.lower()}"
        for name in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING")
        if states.count(name)
    )
    if not complete:
        first_error = next((t.user_attrs[st.ERROR] for t in trials if st.ERROR in t.user_attrs), None)
        raise TuneError(
            f"no trial completed ({counts or 'no trial'})"
            + (f"; the first failure: {first_error}" if first_error else "")
            + f"; see {run_dir / 'trials.csv'}"
        )
    best = max(complete, key=lambda t: t.value)
    header = (
        f"# Best of {len(trials)} trials (trial {best.number}, val_acc {best.value:.4f}) of "
        f"`python -m mnist_lit tune`; run it with `python -m mnist_lit fit --config THIS_FILE`.\n"
        f"# Searched values: {json.dumps(best.params)}\n"
    )
    write_text(run_dir / "best_config.yaml", header + best.user_attrs["config"])
    print(f"\n{len(trials)} trials: {counts}. Best: trial {best.number}, val_acc {best.value:.4f}")
    print(yaml.safe_dump(nested(best.params), sort_keys=False).rstrip())
    print(
        f"Table: {run_dir / 'trials.csv'}\nBest config: {run_dir / 'best_config.yaml'} "
        f"(python -m mnist_lit fit --config {run_dir / 'best_config.yaml'})"
    )
