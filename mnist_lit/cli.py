"""The entry point of every command: the command line checked and prepared, the project's LightningCLI built
(:mod:`mnist_lit.lightning_cli`) or an extra command called (:mod:`mnist_lit.commands`), and the one place where
the errors a user can act on become one ``error:`` line and an exit status."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

import torch
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from mnist_lit import option_cache, yaml_limits
from mnist_lit.allocator import keep_freed_memory
from mnist_lit.callbacks import PredictionWriter
from mnist_lit.command_line import EVALUATION_COMMANDS, EXTRA_COMMANDS, PROG, prepare_argv
from mnist_lit.distributed import EndRanksOnFailure
from mnist_lit.errors import MnistLitError, SettingError
from mnist_lit.lightning_cli import MNISTLightningCLI
from mnist_lit.model import MNISTClassifier
from mnist_lit.option_check import usage_line
from mnist_lit.parser_errors import one_line_error
from mnist_lit.quiet import hide_unactionable_messages
from mnist_lit.runs import discard_claimed, release_unused
from mnist_lit.signals import (
    SIGINT_EXIT_STATUS,
    SIGTERM_EXIT_STATUS,
    SigtermCheckpoint,
    SigtermStop,
    stop_between_runs,
)
from mnist_lit.streams import reader_gone
from mnist_lit.tensorboard_writer import use_tensorboard_stub


class ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose error messages show the usage's first words only: ``fit``'s full usage
    is some 60 lines of options, which buried the one-line error below it (``--help`` still lists them all);
    the error itself is one line too (:func:`mnist_lit.parser_errors.one_line_error`)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """jsonargparse's error, printed on one line when it exits (``--trainer.max_epochs abc: expected an int
        (or null)``); raised unchanged to the parser that called this one otherwise."""
        super().error(one_line_error(message) if self.exit_on_error else message, ex)

    def print_usage(self, file=None) -> None:
        """Print the usage's first words only, the same at any terminal width (``--help`` lists every option)."""
        self._print_message(f"{usage_line(self.prog)}\n", file or sys.stdout)

    def parse_args(self, *args, **kwargs):
        """jsonargparse's ``parse_args``; the top-level parser first remembers its commands' options, so that the
        next usage error is answered without Lightning (:mod:`mnist_lit.option_cache`); ``--print_config`` into a pipe
        whose reader has gone ends quietly (:func:`mnist_lit.streams.reader_gone`); a seed numpy cannot take is
        refused (:func:`check_seed`)."""
        option_cache.save_options(self)
        try:
            config = super().parse_args(*args, **kwargs)
        except BrokenPipeError:
            reader_gone()
        check_seed(config)
        return config


def check_seed(config) -> None:
    """Refuse a ``seed_everything`` that Lightning's ``seed_everything`` would refuse with a traceback, before
    anything is built: numpy's seeds are 0 to 2**32 - 1 (``true`` and ``false`` pass: Lightning's choice, no seeding).
    ``config``: the parsed command line, with a subcommand (``fit``, ...) or without one (``cv``, ``tune``, ``lr_find``).

    Raises:
        SettingError: an int outside that range (from the command line or a config file).
    """
    subcommand = config.get("subcommand")
    seed = (config.get(subcommand) if subcommand else config).get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not min_seed_value <= seed <= max_seed_value:
        raise SettingError(
            f"--seed_everything {seed} is not a seed numpy takes: give an integer from {min_seed_value} to "
            f"{max_seed_value}, or false for no seeding"
        )


def build_cli(args: list[str] | None = None, run: bool = True, callbacks: Sequence = ()) -> MNISTLightningCLI:
    """The project's LightningCLI. ``run=False`` parses ``args`` as ``fit`` would and instantiates
    ``cli.trainer``/``cli.model``/``cli.datamodule`` without running anything; ``callbacks`` are added
    to the trainer's (used by ``cv``/``tune``)."""
    yaml_limits.install()  # configs and YAML values: size, depth and alias limits
    with warnings.catch_warnings():
        if not run:  # extra commands pass args while sys.argv holds theirs: expected, not a mistake
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return MNISTLightningCLI(
            MNISTClassifier,
            LightningDataModule,  # --data CLASS: MNISTDataModule (the default) or PicturesDataModule (predict)
            subclass_mode_data=True,
            seed_everything_default=0,
            trainer_defaults={
                "callbacks": [PredictionWriter(), SigtermCheckpoint(), SigtermStop(), EndRanksOnFailure(), *callbacks]
            },
            auto_configure_optimizers=False,
            args=args,
            run=run,
            parser_class=ArgumentParser,
            # The program as users type it (jsonargparse would name it after sys.argv[0], "__main__.py").
            parser_kwargs={"prog": PROG, "epilog": f"More commands: {', '.join(EXTRA_COMMANDS)} ({PROG} NAME --help)."}
            if run
            else {"prog": PROG},
        )


def quiet_process() -> None:
    """Process-wide settings of a run: the allocator, the package's log lines on stderr, no warnings users
    cannot act on."""
    keep_freed_memory()  # before any tensor is allocated: why, in mnist_lit.allocator
    package_log = logging.getLogger("mnist_lit")  # notices and download attempts on stderr, as Lightning's own
    if not logging.getLogger().hasHandlers() and not package_log.handlers:
        package_log.addHandler(logging.StreamHandler())
        package_log.setLevel(logging.INFO)
    # Lightning 2.6 builds torch's deprecated LeafSpec: a FutureWarning on every run that users cannot act on.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def refuse_usage_errors(argv: list[str], commands: Sequence[str]) -> None:
    """Exit 2 with one ``error:`` line for ``--data.pixel_scale`` (moved into the model) or an unknown command
    (jsonargparse would list only Lightning's four)."""
    if "--data.pixel_scale" in argv or any(arg.startswith("--data.pixel_scale=") for arg in argv):
        print(
            "error: --data.pixel_scale moved into the model, which scales its own uint8 input and saves the "
            "setting in its checkpoints: use --model.pixel_scale",
            file=sys.stderr,
        )
        sys.exit(2)
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        print(
            f"usage: {PROG} COMMAND ...\nerror: unknown command {argv[0]!r}: choose from {', '.join(commands)} "
            f"({PROG} COMMAND --help)",
            file=sys.stderr,
        )
        sys.exit(2)


def run_command(argv: list[str], args: list[str] | None) -> None:
    """Run the extra command ``argv[0]`` with the rest of ``argv``, or LightningCLI on ``args`` (``None``:
    ``sys.argv``); exit 1 when pictures of ``predict`` failed (each has its ``error:`` line already)."""
    if argv and argv[0] in EXTRA_COMMANDS:
        module, function = EXTRA_COMMANDS[argv[0]].split(":")
        getattr(importlib.import_module(module), function)(argv[1:])
    else:
        signal.signal(signal.SIGTERM, stop_between_runs)  # Lightning's loops add their own: mnist_lit.signals
        cli = build_cli(args)
        if cli.failed_files:  # each one already has its `error: FILE: reason` line on stderr
            sys.exit(1)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lit`` and ``mnist-lit``: every error a user can act on ends here as one
    ``error:`` line and exit status 2 (SIGTERM: :data:`mnist_lit.signals.SIGTERM_EXIT_STATUS`)."""
    quiet_process()
    commands = [*MNISTLightningCLI.subcommands(), *EXTRA_COMMANDS]
    argv = prepare_argv(sys.argv[1:] if args is None else args, commands, PROG)  # no command, --config first
    if args is None:
        sys.argv[1:] = argv  # what LightningCLI parses, and what Lightning's DDP launcher runs again
    else:
        args = argv
    hide_unactionable_messages(argv)
    use_tensorboard_stub(argv)  # no TensorFlow import (seconds) when it is installed: mnist_lit.tensorboard_writer
    refuse_usage_errors(argv, commands)
    if argv and argv[0] in EVALUATION_COMMANDS:
        # These runs log into a new version folder, so Lightning warns that the checkpoint callbacks' state in
        # the checkpoint (which best files were kept where) is not reloaded: nothing is saved by these runs.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
    try:
        run_command(argv, args)
    except MnistLitError as err:  # every error a user can act on (mnist_lit.errors)
        release_unused()  # a run folder claimed before the error, still empty
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except torch.distributed.DistNetworkError as err:  # the rendezvous failed after the processes started
        print(f"error: the processes could not connect: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:  # Lightning's SystemExit without a code: a scheduler would read success
        saved = SigtermCheckpoint.saved
        discard_stopped_evaluation(argv)
        where = f"saved {saved}; continue with the same command and --ckpt_path last" if saved else "nothing saved"
        print(f"error: stopped by SIGTERM; {after_training(argv) or where}", file=sys.stderr)
        sys.exit(SIGTERM_EXIT_STATUS)
    except MisconfigurationException as err:  # Lightning's own refusals, e.g. two progress bars
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside Lightning's loops (parsing, building the trainer, reading data)
        if argv and argv[0] == "serve":  # its way to stop: uvicorn has said "Finished server process"
            sys.exit(SIGINT_EXIT_STATUS)
        stopped_by_ctrl_c(argv)
    except SystemExit:  # Lightning ends a run stopped by Ctrl-C with status 1 and no line of ours
        if SigtermCheckpoint.interrupted[0] and argv and argv[0] != "tune":  # tune records its own stop
            stopped_by_ctrl_c(argv)
        raise


def discard_stopped_evaluation(argv: list[str]) -> None:
    """Remove the new folder of a stopped ``validate``/``test``/``predict``: its results were never written in full.
    (A fit's folder stays; a claimed folder still empty goes at exit: :func:`mnist_lit.runs.release_unused`.)"""
    if argv and argv[0] in EVALUATION_COMMANDS:
        discard_claimed()


def stopped_by_ctrl_c(argv: list[str]) -> NoReturn:
    """Exit :data:`~mnist_lit.signals.SIGINT_EXIT_STATUS` with one ``error:`` line saying what the stopped run left:
    an evaluation's new folder is removed; a fit keeps the ``last.ckpt`` of its last finished epoch, if any, to
    continue from."""
    discard_stopped_evaluation(argv)
    earlier = SigtermCheckpoint.interrupted[1]
    where = after_training(argv)
    if not where and earlier:
        where = f"continue from {earlier} (its last finished epoch) with the same command and --ckpt_path last"
    print(f"error: stopped by Ctrl-C{'; ' + where if where else ''}", file=sys.stderr)
    sys.exit(SIGINT_EXIT_STATUS)


def after_training(argv: list[str]) -> str:
    """For a ``fit`` stopped after its training finished (in or before the test after it): what is saved and the
    command that tests it; else ``""``."""
    trained = SigtermCheckpoint.trained
    if trained is None or not argv or argv[0] != "fit":
        return ""
    return (
        f"the training had finished and saved {trained}; the test after it did not run: "
        f"{PROG} test --ckpt_path {trained}"
    )
