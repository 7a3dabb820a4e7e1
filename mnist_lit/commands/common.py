"""What the extra commands share: their argument parser (:class:`CommandParser`, all five); for ``cv``, ``lr_find``
and ``tune`` also the split of their options from the fit flags, their run folders, one ``fit`` run."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from mnist_lit.command_line import PROG
from mnist_lit.errors import MnistLitError, TuneError
from mnist_lit.streams import write_out

#: What the extra commands accept beyond their own options.
FIT_FLAGS_NOTE = (
    "All fit flags are accepted too (--config, --data.*, --model.*, --trainer.*, --seed_everything); "
    "see `python -m mnist_lit fit --help`."
)


class CommandParser(argparse.ArgumentParser):
    """The argument parser of the extra commands: a usage error is the usage, then one line
    ``error: MESSAGE (python -m mnist_lit COMMAND --help lists the options)``, exit status 2, as for the other
    commands (argparse's own line starts with the program's name). Abbreviated options are not accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the usage and the one ``error:`` line to stderr; exit 2."""
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")

    def print_help(self, file: Any = None) -> None:
        """argparse's help text; on standard output through :func:`mnist_lit.streams.write_out` (argparse would
        ignore a pipe whose reader has gone and exit 0)."""
        if file is None:
            write_out(self.format_help())
        else:
            super().print_help(file)


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
    the command fails before writing any file into it.

    Raises:
        TuneError: ``log_dir/name`` exists already.
    """
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


def logger_flag(run_dir: Path, version: str) -> str:
    """A ``--trainer.logger`` flag that logs to ``run_dir/version`` with TensorBoard (replaces the config's logger)."""
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(run_dir), "name": "", "version": version},
    }
    return f"--trainer.logger={json.dumps(logger)}"


def build_cli(*args, **kwargs):
    """:func:`mnist_lit.cli.build_cli`, imported when a run is built, for start-up speed: these commands'
    ``--help`` and usage errors are answered without importing Lightning (tests/test_startup.py)."""
    from mnist_lit.cli import build_cli as build  # start-up speed: Lightning only for a real run

    return build(*args, **kwargs)


def parse_command(
    prog: str, description: str, add_options: Callable[[argparse.ArgumentParser], None], argv: list[str]
) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` into this command's own options and the ``fit`` flags passed on to LightningCLI."""
    parser = CommandParser(prog=f"{PROG} {prog}", description=description, epilog=FIT_FLAGS_NOTE)
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
    return fit_built(cli), cli


def fit_built(cli: Any) -> float:
    """Fit the run of a CLI built with ``run=False``; returns its last ``val_acc``.

    Raises:
        TuneError: the run logged no ``val_acc`` (see :func:`fit_val_acc`).
    """
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    val_acc = cli.trainer.callback_metrics.get("val_acc")
    if val_acc is None:
        raise TuneError(
            "the run logged no val_acc; do not set --trainer.limit_val_batches 0 or "
            "--trainer.check_val_every_n_epoch above max_epochs"
        )
    return float(val_acc)


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (errors of this project: the message alone, already one line)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, MnistLitError) else f"{type(err).__name__}: {text}"


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
