"""LightningCLI wiring: ``fit``/``validate``/``test``/``predict``, the extra commands, and friendly errors."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mnist_lit import resume
from mnist_lit.allocator import keep_freed_memory
from mnist_lit.callbacks import PredictionWriter
from mnist_lit.checkpoint import CheckpointError, SafeCheckpointIO, check_compatible, check_hparams, load_checkpoint
from mnist_lit.data import DataError, MNISTDataModule
from mnist_lit.distributed import EndRanksOnFailure, LaunchError, check_launch, per_device_batch_size
from mnist_lit.model import HyperparameterError, MNISTClassifier


class ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose error messages show the first line of the usage only: ``fit``'s full usage
    is some 60 lines of options, which buried the one-line error below it (``--help`` still lists them all)."""

    def print_usage(self, file=None) -> None:
        lines = self.format_usage().splitlines()
        self._print_message(lines[0] + (" ...\n" if len(lines) > 1 else "\n"), file or sys.stdout)


class MNISTLightningCLI(LightningCLI):
    """LightningCLI plus ``--test_after_fit``: after ``fit``, test the best checkpoint (the tutorial's ``evaluate``)."""

    checkpoint: dict | None = None  # the --ckpt_path checkpoint, loaded with weights_only=True
    resumed_version: int | None = None  # a resumed fit continues lightning_logs/version_N
    failed_files = 0  # picture files that failed in `predict --data.predict_path` (exit status 1)

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check ``--ckpt_path`` before anything is built (Lightning reads its hyperparameters next).

        ``last`` becomes the newest ``last.ckpt`` of any run (:func:`mnist_lit.resume.resolve_last`);
        the file is loaded with ``weights_only=True`` (one-line error if refused, damaged or missing);
        a resumed ``fit`` continues the checkpoint's version folder.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is None or not config.get("ckpt_path"):
            return
        config.ckpt_path = resume.resolve_last(config, subcommand)
        if str(config.ckpt_path) in ("last", "best", "hpc", "registry") or "://" in str(config.ckpt_path):
            return  # Lightning's own keywords and remote files
        self.checkpoint = load_checkpoint(config.ckpt_path)  # weights_only=True, as LightningCLI reads it next
        check_hparams(self.checkpoint, self.model_class, config.ckpt_path)
        if subcommand == "fit":
            self.resumed_version = resume.continue_version(config, config.ckpt_path, self.checkpoint["global_step"],
                                                           self.save_config_kwargs)

    def instantiate_trainer(self, **kwargs):
        """The configured trainer, plus :class:`SafeCheckpointIO` (atomic saves, weights_only loads)
        unless the configuration brings its own ``CheckpointIO`` plugin; without the configured
        progress bar when ``enable_progress_bar`` is false.

        With ``deterministic: true`` (the configs), PyTorch's deterministic algorithms stay on but new
        tensors are no longer filled with NaN first (``torch.utils.deterministic.fill_uninitialized_memory``):
        that filling only exposes reads of uninitialized memory, PyTorch's documentation advises turning it
        off for valid programs, and it cost 0.5 ms of a 20 ms training step on 2 CPU cores."""
        config = self._get(self.config_init, "trainer", default={})
        plugins = kwargs.get("plugins", config.get("plugins"))
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = [*plugins, SafeCheckpointIO()]
        callbacks = kwargs.get("callbacks", config.get("callbacks"))
        if kwargs.get("enable_progress_bar", config.get("enable_progress_bar")) is False and callbacks:
            # `--trainer.enable_progress_bar false` turns off the configured progress bar too (Lightning
            # would refuse the combination); the YAML keeps one only to set its refresh_rate.
            kwargs["callbacks"] = [c for c in callbacks if not isinstance(c, ProgressBar)]
        trainer = super().instantiate_trainer(**kwargs)
        # Several processes: launcher/world size mismatch or busy MASTER_PORT, before any starts. The extra
        # commands (no subcommand here) may run as independent single-process workers under srun/torchrun.
        check_launch(trainer, independent_ok=self.subcommand is None)
        if torch.are_deterministic_algorithms_enabled():
            torch.utils.deterministic.fill_uninitialized_memory = False
        return trainer

    def after_instantiate_classes(self) -> None:
        """Refuse a checkpoint of another architecture; before a resumed fit, drop logged steps it will redo."""
        if self.checkpoint is None:
            return
        ckpt_path = self.config[self.subcommand].ckpt_path
        check_compatible(self.checkpoint, self.model, ckpt_path)
        print(f"Checkpoint {ckpt_path}: epoch {self.checkpoint['epoch']}, global step {self.checkpoint['global_step']}",
              file=sys.stderr)
        if self.resumed_version is not None and self.trainer.logger is not None:
            step, saved_at = self.checkpoint["global_step"], Path(ckpt_path).stat().st_mtime
            removed = resume.trim_event_files(self.trainer.logger.log_dir, step, saved_at)
            print(f"Resuming in {self.trainer.logger.log_dir}; removed {removed} events logged after that checkpoint "
                  "(the resumed run logs those steps again)", file=sys.stderr)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, evaluate the best checkpoint on the test set and print test_acc.")

    def before_fit(self) -> None:
        """Several processes: refuse a global ``batch_size`` they don't divide before any process starts."""
        per_device_batch_size(self.datamodule.hparams.batch_size, self.trainer.world_size, training=True)

    def after_predict(self) -> None:
        """Count the picture files that could not be predicted (the writer printed why); main() exits 1 then."""
        self.failed_files = sum(getattr(callback, "failed_files", 0) for callback in self.trainer.callbacks)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        callback = self.trainer.checkpoint_callback
        ckpt_path = "best" if callback is not None and callback.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            where = callback.best_model_path if ckpt_path else "the final weights"
            print(f"Test accuracy: {results[0]['test_acc']:.4f} (test_loss {results[0]['test_loss']:.4f}, {where})")


PROG = "python -m mnist_lit"  # the name usage lines and tips give the program (the extra commands' too)

#: Commands beyond LightningCLI's own: name -> "module:function", called with the arguments after the name.
#: They build their runs with :func:`build_cli` (``run=False``), so all fit flags work the same there.
EXTRA_COMMANDS = {
    "cv": "mnist_lit.tuning:cv_main",
    "lr_find": "mnist_lit.tuning:lr_find_main",
    "tune": "mnist_lit.tuning:tune_main",
    "export": "mnist_lit.export:export_main",
    "serve": "mnist_lit.serve.app:serve_main",
}


def build_cli(args: list[str] | None = None, run: bool = True, callbacks: Sequence = ()) -> MNISTLightningCLI:
    """The project's LightningCLI. ``run=False`` parses ``args`` as ``fit`` would and instantiates
    ``cli.trainer``/``cli.model``/``cli.datamodule`` without running anything; ``callbacks`` are added
    to the trainer's (used by ``cv``/``tune``)."""
    with warnings.catch_warnings():
        if not run:  # extra commands pass args while sys.argv holds theirs: expected, not a mistake
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return MNISTLightningCLI(
            MNISTClassifier,
            MNISTDataModule,
            seed_everything_default=0,
            trainer_defaults={"callbacks": [PredictionWriter(), EndRanksOnFailure(), *callbacks]},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            parser_class=ArgumentParser,
            # The program as users type it (jsonargparse would name it after sys.argv[0], "__main__.py").
            parser_kwargs={"prog": PROG, "epilog": f"More commands: {', '.join(EXTRA_COMMANDS)} ({PROG} NAME --help)."}
            if run else {"prog": PROG},
        )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lit`` and ``mnist-lit``."""
    keep_freed_memory()  # before any tensor is allocated: CPU training steps about 1.4x faster (mnist_lit.allocator)
    package_log = logging.getLogger("mnist_lit")  # notices and download attempts on stderr, as Lightning's own
    if not logging.getLogger().hasHandlers() and not package_log.handlers:
        package_log.addHandler(logging.StreamHandler())
        package_log.setLevel(logging.INFO)
    # Lightning 2.6 builds torch's deprecated LeafSpec: a FutureWarning on every run that users cannot act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in ("validate", "test", "predict"):
        # These runs log into a new version folder, so Lightning warns that the checkpoint callbacks' state in
        # the checkpoint (which best files were kept where) is not reloaded: nothing is saved by these runs.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
    from mnist_lit.tuning import TuneError

    commands = [*MNISTLightningCLI.subcommands(), *EXTRA_COMMANDS]
    if argv and not argv[0].startswith("-") and argv[0] not in commands:  # jsonargparse would list only Lightning's four
        print(f"usage: {PROG} COMMAND ...\nerror: unknown command {argv[0]!r}: choose from {', '.join(commands)} "
              f"({PROG} COMMAND --help)", file=sys.stderr)
        sys.exit(2)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            module, function = EXTRA_COMMANDS[argv[0]].split(":")
            getattr(importlib.import_module(module), function)(argv[1:])
        else:
            cli = build_cli(args)
            if cli.failed_files:  # each one already has its `error: FILE: reason` line on stderr
                sys.exit(1)
    except (DataError, TuneError, CheckpointError, HyperparameterError, LaunchError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except torch.distributed.DistNetworkError as err:  # the rendezvous failed after the processes started
        print(f"error: the processes could not connect: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except MisconfigurationException as err:  # Lightning's own refusals, e.g. two progress bars
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
