"""``python -m mnist_lit cv``: K-fold cross-validation (the tutorial's §5.2), in one process or fold by fold."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnist_lit.atomic import write_csv, write_text
from mnist_lit.command_line import PROG
from mnist_lit.commands.common import fit_val_acc, fresh_run_dir, logger_flag, parse_command
from mnist_lit.errors import TuneError

if TYPE_CHECKING:
    import torch

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
    from mnist_lit.runs import data_settings  # start-up: `cv --help` answers without importing torch

    config = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    config["data"] = dict(data_settings(config))  # MNISTDataModule's arguments, without class_path/init_args
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


def first_difference(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first (sorted) setting whose value differs between two folds' ``settings``, else None."""
    return min((key for key in first.keys() | other.keys() if first.get(key) != other.get(key)), default=None)


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
        key = first_difference(first["settings"], result["settings"])
        if key is not None:
            raise TuneError(
                f"folds 0 and {result['fold']} in {run_dir} were trained with different settings "
                f"({key}: {first['settings'].get(key)!r} vs {result['settings'].get(key)!r}); "
                f"retrain one of them with the other's flags"
            )
    return results


def write_cv_tables(run_dir: Path, results: list[dict[str, Any]]) -> torch.Tensor:
    """Write ``cv_results.csv`` and ``folds.csv`` for the finished ``results``; returns their val_acc (float64)."""
    import torch  # start-up speed: `cv --help` and its usage errors need no torch (mnist_lit.launch)

    rows = [{**r, "val_acc": f"{r['val_acc']:.6f}"} for r in results]
    accs = torch.tensor([float(row["val_acc"]) for row in rows], dtype=torch.float64)
    rows.append({"fold": "mean", "val_acc": f"{accs.mean():.6f}"})
    if len(accs) > 1:
        rows.append({"fold": "std", "val_acc": f"{accs.std():.6f}"})
    columns = ["fold", "train_size", "val_size", "val_acc", "log_dir"]
    write_csv(run_dir / "cv_results.csv", columns, ({key: row.get(key) for key in columns} for row in rows))
    fold_rows = sorted([i, y, r["fold"]] for r in results for i, y in zip(r["val_index"], r["val_label"], strict=False))
    write_csv(
        run_dir / "folds.csv",
        ["index", "label", "fold"],
        ({"index": i, "label": y, "fold": k} for i, y, k in fold_rows),
    )
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


def cv_options(p: argparse.ArgumentParser) -> None:
    """Add the options of ``cv`` (``--folds``, ``--fold`` or ``--collect``, ``--name``) to ``p``."""
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


def check_cv_options(opts: argparse.Namespace) -> None:
    """Refuse ``--folds`` below 2, ``--fold`` outside ``0..K-1`` and a ``--name`` that is not a folder name.

    Raises:
        TuneError: one line naming the option.
    """
    if opts.folds < 2:
        raise TuneError(f"--folds must be 2 or more, got {opts.folds}")
    if opts.fold is not None and not 0 <= opts.fold < opts.folds:
        raise TuneError(f"--fold must be in 0..{opts.folds - 1} for --folds {opts.folds}, got {opts.fold}")
    if opts.name is not None and (not opts.name or Path(opts.name).name != opts.name or opts.name in (".", "..")):
        raise TuneError(f"--name must be a folder name without '/', got {opts.name!r}")


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
    opts, fit_args = parse_command(
        "cv",
        "K-fold cross-validation: train K models, each validated on a different stratified fold.",
        cv_options,
        argv,
    )
    check_cv_options(opts)
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
    cv_one_fold(opts, fit_args, run_dir)


def cv_one_fold(opts: argparse.Namespace, fit_args: list[str], run_dir: Path) -> None:
    """``cv --fold I``: train fold I into ``run_dir/fold_I`` (an unfinished earlier attempt is removed first).

    Raises:
        TuneError: the fold is already finished.
    """
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
