"""Entry point of ``python -m mnist_lit`` and ``mnist-lit``: answer what needs no model before importing one.

Importing Lightning costs a multiple of a bare ``import torch`` (Lightning imports torchmetrics, which imports
torchvision's models and ``torch._dynamo``; figures in docs/performance.md). The top-level ``--help``, a missing or
unknown command, a ``--config`` file that does not exist or is not YAML, a ``--ckpt_path`` or ``--finetune_from``
file that does not exist or an empty one, ``fit`` without ``--config``, and
``--help`` of the extra commands (``cv``, ``lr_find``, ``tune``, ``export``, ``serve``) are answered here without it,
and so are a mistyped option, a value of the wrong type and ``fit --help`` once a run has remembered the options
(:mod:`mnist_lit.option_cache`, :mod:`mnist_lit.option_check`); everything else goes to :func:`mnist_lit.cli.main`.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from mnist_lit import option_cache, option_check
from mnist_lit.command_line import (
    EXTRA_COMMANDS,
    FIT_FLAG_COMMANDS,
    LIGHTNING_COMMANDS,
    PROG,
    checkpoint_flag_error,
    fit_without_config,
    missing_config,
    missing_config_reason,
    no_command_usage,
    prepare_argv,
)
from mnist_lit.streams import WRITE_FAILED_STATUS, closed_stdout_error, hold_closed_descriptors, write_out

COMMANDS = (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS)
HELP_FLAGS = {"-h", "--help"}


def top_level_help() -> str:
    """What ``python -m mnist_lit --help`` prints: the commands, and where each one's options are listed."""
    return (
        f"{no_command_usage(PROG, COMMANDS)}\n\n"
        f"Each command lists its options with --help ({PROG} fit --help). --config FILE may come before or after "
        f"the command.\n"
    )


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line ``args`` (default ``sys.argv[1:]``); exits 0 after a help text, 2 with one ``error:``
    line on a usage error (no or unknown command, a ``--config`` file that does not exist or is a folder, a
    checkpoint that does not exist: :func:`mnist_lit.command_line.checkpoint_flag_error`, ``fit`` without
    ``--config``: :func:`mnist_lit.command_line.fit_without_config`)."""
    argv = list(sys.argv[1:] if args is None else args)
    closed = closed_stdout_error(argv)  # --help or --print_config with standard output closed (>&-)
    if closed is not None:
        print(closed, file=sys.stderr)
        sys.exit(WRITE_FAILED_STATUS)
    if (not argv or argv[0].startswith("-")) and HELP_FLAGS & set(argv) and not set(COMMANDS) & set(argv):
        write_out(top_level_help())
        sys.exit(0)
    prepared = prepare_argv(argv, COMMANDS, PROG)  # no command: lists them and exits 2; oversized configs
    command = prepared[0] if prepared else ""
    if not command.startswith("-") and command not in COMMANDS:
        print(
            f"usage: {PROG} COMMAND ...\nerror: unknown command {command!r}: choose from {', '.join(COMMANDS)} "
            f"({PROG} COMMAND --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    missing = missing_config(prepared) if command in FIT_FLAG_COMMANDS else None
    if missing is not None and not HELP_FLAGS & set(prepared):
        print(
            f"usage: {PROG} {command} [--config FILE] [options]\n"
            f"error: --config {missing}: {missing_config_reason(missing, f'{PROG} {command} --help lists the options')}",
            file=sys.stderr,
        )
        sys.exit(2)
    refused = None if HELP_FLAGS & set(prepared) else checkpoint_flag_error(prepared)
    if refused is not None:  # the message load_checkpoint gives, without importing Lightning to get there
        print(refused, file=sys.stderr)
        sys.exit(2)
    if fit_without_config(prepared):
        print(
            f"usage: {PROG} fit --config FILE [options]\n"
            "error: fit needs --config: the tutorial's recipe is --config configs/mnist.yaml (or give "
            "--trainer.max_epochs and the other settings yourself)",
            file=sys.stderr,
        )
        sys.exit(2)
    if command in EXTRA_COMMANDS and HELP_FLAGS & set(prepared[1:]):
        module, function = EXTRA_COMMANDS[command].split(":")  # argparse prints the help and exits 0
        getattr(importlib.import_module(module), function)(prepared[1:])
    answer_from_remembered_options(prepared)
    from mnist_lit.cli import main as cli_main  # Lightning, the model and the data: for a real run

    with option_cache.recording_help(prepared):
        cli_main(None if args is None else list(args))


def answer_from_remembered_options(argv: list[str]) -> None:
    """Exit with what the parser would print, from the options an earlier run remembered
    (:mod:`mnist_lit.option_check`): ``COMMAND --help`` (exit 0), or a refused option or value (exit 2)."""
    help_text = option_cache.remembered_help(argv)
    if help_text is not None:
        write_out(help_text)
        sys.exit(0)
    refusal = option_check.usage_error(argv)
    if refusal is not None:
        sys.stderr.write(refusal)
        sys.exit(2)


def entry_point() -> None:
    """``python -m mnist_lit`` and ``mnist-lit``: :func:`main`, then :func:`leave` with its exit status. An
    uncaught exception (a bug) still ends the normal way, with its traceback. A standard stream the caller closed
    is held open on ``os.devnull`` first (:func:`mnist_lit.streams.hold_closed_descriptors`)."""
    hold_closed_descriptors()
    try:
        main()
    except SystemExit as stop:
        leave(stop.code)
    except KeyboardInterrupt:  # Ctrl-C while importing torch and Lightning: nothing was started or written
        print("error: stopped by Ctrl-C", file=sys.stderr)
        leave(130)  # 128 + SIGINT, as mnist_lit.signals.SIGINT_EXIT_STATUS (not imported here: it needs Lightning)
    leave(0)


def leave(code: int | str | None) -> None:
    """Exit with ``code`` (as ``sys.exit`` reads it) without the interpreter's teardown of every module, which
    after importing torch and Lightning costs more than a second of each command (docs/performance.md).

    Everything a run writes is closed before this (checkpoints and tables are written atomically, Lightning's
    loggers are finalized at the end of a run); the ``atexit`` handlers, logging and the standard streams are
    run and flushed here as a normal exit would."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # CPython's own exit hook runner: what a normal exit calls first
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            if stream is not None:  # None: the caller closed it (>&-); print() wrote nothing there
                stream.flush()
    os._exit(code or 0)
