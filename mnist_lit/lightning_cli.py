"""The project's LightningCLI: a trained run is self-contained (:mod:`mnist_lit.run_settings`), a resumed run
continues its own folder, and the trainer gets safe checkpoint IO; plus ``--test_after_fit`` and ``--finetune_from``.

:func:`mnist_lit.cli.build_cli` builds it; :func:`mnist_lit.cli.main` turns its errors into ``error:`` lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit import ensemble, finetune, resume, run_settings
from mnist_lit.augment import TrainAugmentation
from mnist_lit.checkpoint import SAVED_AT_KEY, check_compatible, check_hparams, load_checkpoint
from mnist_lit.command_line import EVALUATION_COMMANDS, split_print_config
from mnist_lit.data.identity import check_same_data
from mnist_lit.data.sharding import per_device_batch_size
from mnist_lit.data_choice import check_data_class, check_eval, import_pictures_datamodule, uses_pictures
from mnist_lit.distributed import check_launch
from mnist_lit.errors import CheckpointError, MnistLitError, SettingError
from mnist_lit.model import MNISTClassifier
from mnist_lit.parser_errors import lightning_refusal
from mnist_lit.precision import bf16_cpu_notice, check_precision
from mnist_lit.runs import claim_version, data_settings, evaluate_in_a_new_folder, logger_root, version_of
from mnist_lit.trainer_args import trainer_kwargs, without_run_folder


class MNISTLightningCLI(LightningCLI):
    """LightningCLI where a trained run is self-contained (:mod:`mnist_lit.run_settings`), plus
    ``--test_after_fit`` (after ``fit``, test the best checkpoint: the tutorial's ``evaluate``) and
    ``--finetune_from`` (a new run starting from a checkpoint's weights)."""

    checkpoint: dict | None = None  # the --ckpt_path checkpoint, verified and loaded with weights_only=True
    run_version: int | None = None  # the lightning_logs/version_N this run logs into (claimed, resumed or reused)
    restart_dir: Path | None = None  # `fit --ckpt_path last` of a run killed before its first checkpoint
    failed_files = 0  # picture files that failed in `predict --data PicturesDataModule` (exit status 1)
    ensemble_model = None  # --ckpt_path CV_RUN of test/predict: the fold models as one (mnist_lit.ensemble)
    _print_config: str | None = None  # validate/test/predict --print_config[=FLAGS]: printed once settled

    def parse_arguments(self, parser, args) -> None:
        """Parse, then settle ``--ckpt_path`` and the settings a command takes from the run before anything is built.

        Raises:
            CheckpointError: see :mod:`mnist_lit.run_settings` (one line each).
        """
        argv = self._argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0] in EVALUATION_COMMANDS:  # printed once settled: see _parse_ckpt_path
            argv, self._print_config = split_print_config(argv)
            self._argv = argv
        import_pictures_datamodule(argv)
        self.config = parser.parse_args(argv)
        subcommand = self.config.get("subcommand")
        if subcommand is None:  # run=False (cv, tune, lr_find): parsed as fit, no checkpoint involved
            check_data_class("fit", self.config.data)
            self._settle_dataset(self.config, argv)
            return
        config = self.config[subcommand]
        check_data_class(subcommand, config.data)
        finetune.check_finetune_flag(subcommand, config.get("finetune_from"))
        if subcommand != "fit" and ensemble.is_cv_run(config.get("ckpt_path")):  # K-fold models as one ensemble
            self.config, self.ensemble_model = ensemble.settle_cli(parser, argv, subcommand, self.config)
            return
        ckpt_path = run_settings.resolve_ckpt_path(subcommand, config.get("ckpt_path"), config.trainer)
        if ckpt_path not in (None, "last"):
            self.checkpoint = load_checkpoint(ckpt_path)
            check_hparams(self.checkpoint, MNISTClassifier, ckpt_path)
            base = run_settings.base_config(ckpt_path, self.checkpoint, evaluate=subcommand != "fit")
            if base is not None:  # the run's own settings first, then the command's --config files and flags
                at = argv.index(subcommand) + 1
                self.config = parser.parse_args([*argv[:at], "--config", base, *argv[at:]])
                config = self.config[subcommand]
                evaluate_in_a_new_folder(config, argv)
            if ckpt_path != config.get("ckpt_path"):
                print(f"Using checkpoint {ckpt_path}", file=sys.stderr)
        config.ckpt_path = ckpt_path
        if subcommand == "fit":
            self._settle_fit(config, argv)
        else:  # resolve_ckpt_path refused a missing checkpoint; the one named is loaded above
            assert ckpt_path is not None and self.checkpoint is not None
            check_eval(subcommand, ckpt_path, self.checkpoint, data_settings(config), uses_pictures(config.data))
            if subcommand == "validate" and self.checkpoint is not None:  # its validation images: the run's own
                check_same_data(ckpt_path, self.checkpoint, data_settings(config), "validate")

    def _settle_fit(self, config, argv: list[str]) -> None:
        """It trains something; ``model.dataset`` follows ``data.dataset``; a resume must be the same run; fine-tuning
        is a new run."""
        run_settings.check_training_length(config.trainer)
        self._settle_dataset(config, argv)
        if config.get("finetune_from") and config.ckpt_path:
            raise CheckpointError(
                "--ckpt_path resumes a run, --finetune_from starts a new one from trained weights: give one of them"
            )
        root = logger_root(config.trainer)
        what = None
        if config.ckpt_path:  # the settings as saved, to compare with the run's (a dump checks every value: slow)
            command = yaml.safe_load(self._parser("fit").dump(config, skip_none=False))
        if config.ckpt_path == "last":
            last, run_dir, what = run_settings.find_run_to_resume(root, command)
            config.ckpt_path = None if last is None else str(last)
            if last is not None:
                self.checkpoint = load_checkpoint(last)
            elif run_dir is not None:
                self.restart_dir, self.run_version = run_dir, version_of(run_dir)
                self.save_config_kwargs.update(overwrite=True)  # the same configuration, written again
        if config.ckpt_path:
            self._settle_resume(config, command, root)
        # The run folder this fit writes into, when it is an existing run's (RUN/checkpoints/CKPT: resumed_version).
        held = self.restart_dir or (Path(config.ckpt_path).parent.parent if self.run_version is not None else None)
        if held is not None and getattr(rank_zero_only, "rank", 0) == 0:  # before anything in it is written
            resume.hold_run(held)
        if what:  # the run is settled: nothing of it was touched when a check above refused it
            print(what, file=sys.stderr)
        if config.get("finetune_from"):
            self.finetune_checkpoint = load_checkpoint(config.finetune_from, flag="--finetune_from")
            notice = finetune.check_finetune(config.finetune_from, self.finetune_checkpoint, config.model, argv)
            if notice:
                print(notice, file=sys.stderr)

    def _settle_resume(self, config, command: dict, root: Path | None) -> None:
        """``fit --ckpt_path CKPT``: the same run (settings, data), with epochs left to train; it logs into its
        own folder (:func:`mnist_lit.run_settings.resumed_version`)."""
        assert self.checkpoint is not None  # loaded with the path it came from, in _settle_fit or parse_arguments
        run_settings.check_resume(config.ckpt_path, self.checkpoint, command)
        check_same_data(config.ckpt_path, self.checkpoint, data_settings(config))  # data_dir may move, not change
        run_settings.check_epochs_left(config.ckpt_path, self.checkpoint, config.trainer)
        self.run_version = run_settings.resumed_version(config.ckpt_path, root)
        if self.run_version is not None:  # the first run's config.yaml stays as it is
            self.save_config_kwargs.update(
                config_filename=f"config_resume_step{self.checkpoint['global_step']}.yaml", overwrite=True
            )

    @staticmethod
    def _settle_dataset(config, argv: list[str]) -> None:
        """Training: the model's ``dataset`` (what its outputs mean, saved in checkpoints) is ``--data.dataset``,
        and ``data_dir`` is recorded as an absolute path, so the run's settings work from any folder."""
        data = config.data.init_args  # MNISTDataModule's arguments (check_data_class)
        if "dataset" in run_settings.explicit_flags(argv, "model") and config.model.dataset != data.dataset:
            raise CheckpointError("--model.dataset is set by --data.dataset for training; drop --model.dataset")
        config.model.dataset = data.dataset
        data.data_dir = str(Path(data.data_dir).expanduser().resolve())

    def _parse_ckpt_path(self) -> None:
        """The model's hyperparameters come from the checkpoint (Lightning's rule), after refusing
        ``--model.*`` flags that contradict them (:func:`mnist_lit.run_settings.check_model_flags`); then
        ``--print_config`` of ``validate``/``test``/``predict`` prints what the command will run with, and exits."""
        subcommand = self.config.get("subcommand")
        if self.checkpoint is not None:
            hparams = run_settings.check_model_flags(
                self.config[subcommand].ckpt_path, self.checkpoint, self.config[subcommand].model, self._argv
            )
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        if self._print_config is not None:  # what this command runs with: the run's settings and the checkpoint's
            print(self._parser(subcommand).dump(self.config[subcommand], skip_none="skip_null" in self._print_config))
            sys.exit(0)

    def instantiate_trainer(self, **kwargs):
        """The configured trainer with the arguments of :func:`mnist_lit.trainer_args.trainer_kwargs` (safe
        checkpoint IO; without the callbacks that write into a run folder, and without saving ``config.yaml``,
        when ``logger`` is false or ``fast_dev_run`` is set: one line says so). With ``deterministic: true`` (the configs), new tensors are
        no longer filled with NaN first (``torch.utils.deterministic.fill_uninitialized_memory``; PyTorch's docs
        advise it for valid programs).

        Raises:
            SettingError: a trainer argument Lightning refuses (accelerator, devices, strategy), in one line."""
        config = self._get(self.config_init, "trainer", default={})
        check_precision(kwargs.get("precision", config.get("precision")))  # before a 100-line dtype traceback
        kwargs, dropped = trainer_kwargs(kwargs, config)
        if reason := without_run_folder(kwargs, config):
            self.save_config_callback = None  # no run folder to keep config.yaml in
            if dropped:
                print(f"{reason}: no run folder, so without {', '.join(dropped)}", file=sys.stderr)
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError) as err:  # Lightning's own checks of the arguments; anything else re-raised
            refusal = lightning_refusal(err)
            if refusal is None:
                raise
            raise SettingError(f"--trainer: {refusal}") from None
        # Several processes: launcher/world size mismatch or busy MASTER_PORT, before any starts. The extra
        # commands (no subcommand here) may run as independent single-process workers under srun/torchrun.
        check_launch(trainer, independent_ok=self.subcommand is None)
        if torch.are_deterministic_algorithms_enabled():
            torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # set, not declared, by torch
        notice = bf16_cpu_notice(trainer.precision, trainer.strategy.root_device.type == "cpu")
        if notice and trainer.is_global_zero:
            print(notice, file=sys.stderr)
        return trainer

    def instantiate_classes(self) -> None:
        """Lightning's, except that an error of ours raised by the DataModule's ``__init__`` (a bad
        ``--data.*`` value) is raised as it is: jsonargparse wraps it into a many-line ``ValueError``
        when ``--data`` takes a class path."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause = err.__cause__
            while cause is not None and not isinstance(cause, MnistLitError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None

    def after_instantiate_classes(self) -> None:
        """Claim (or reuse) the run folder; check and load checkpoint weights; before a resumed fit,
        drop logged steps it will redo."""
        self._set_run_folder()
        if self.ensemble_model is not None:
            self.model = self.ensemble_model
        if self.checkpoint is not None:
            ckpt_path = self.config[self.subcommand].ckpt_path
            check_compatible(self.checkpoint, self.model, ckpt_path)
            print(
                f"Checkpoint {ckpt_path}: epoch {self.checkpoint['epoch']}, global step "
                f"{self.checkpoint['global_step']}",
                file=sys.stderr,
            )
        finetune = getattr(self, "finetune_checkpoint", None)
        if finetune is not None:
            path = self.config[self.subcommand].finetune_from
            check_compatible(finetune, self.model, path)
            self.model.load_state_dict(finetune["state_dict"])
            print(
                f"Fine-tuning: a new run starting from the weights of {path} (new optimizer state, epoch 0)",
                file=sys.stderr,
            )
        logger = self.trainer.logger
        if logger is None or self.subcommand != "fit":
            return
        log_dir = str(logger.log_dir)  # TensorBoard and CSV loggers (the ones with run folders) always have one
        if self.restart_dir is not None:
            for events in Path(log_dir).glob("events.out.tfevents.*"):
                events.unlink()  # the killed attempt's partial logs: the run starts again from step 0
        elif self.checkpoint is not None and self.run_version is not None:
            saved_at = self.checkpoint.get(SAVED_AT_KEY) or Path(self.config.fit.ckpt_path).stat().st_mtime
            step = self.checkpoint["global_step"]
            removed, tests = resume.trim_event_files(log_dir, step, saved_at)
            test_again = bool(self.config.fit.get("test_after_fit", True))
            print(resume.trim_notice(log_dir, removed, tests, test_again), file=sys.stderr)

    def _set_run_folder(self) -> None:
        """Log into ``version_N``: the resumed or reused run's, else a new one claimed atomically (rank 0),
        so that two runs started together never share a folder. Loggers with a version of their own keep it."""
        logger = self.trainer.logger
        if not isinstance(logger, (TensorBoardLogger, CSVLogger)) or logger._version is not None:
            return  # Lightning's loggers keep the configured version in `_version` (None: next free one)
        if self.run_version is None and getattr(rank_zero_only, "rank", 0) == 0:
            self.run_version = claim_version(Path(logger.root_dir))
            if self.subcommand == "fit":  # no `fit --ckpt_path last` resumes it while it trains
                resume.hold_run(Path(logger.root_dir) / f"version_{self.run_version}")
        if self.run_version is not None:
            logger._version = self.run_version

    def add_arguments_to_parser(self, parser) -> None:
        # `--data` is a class path; without one it is the IDX files' DataModule (configs may leave class_path out).
        parser.set_defaults({"data": {"class_path": "mnist_lit.data.MNISTDataModule"}})
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, evaluate the best checkpoint on the test set and print test_acc.",
        )
        parser.add_argument(
            "--finetune_from",
            type=str | None,
            default=None,
            help="fit only: start a NEW run from this checkpoint's weights, with this command's "
            "hyperparameters and a fresh optimizer (--ckpt_path resumes the same run instead).",
        )
        # Training-batch augmentation (mnist_lit.augment): always a trainer callback, off unless `augment:` sets it.
        parser.add_lightning_class_args(TrainAugmentation, "augment")

    def before_fit(self) -> None:
        """Several processes: refuse a global ``batch_size`` they don't divide before any process starts."""
        per_device_batch_size(self.datamodule.hparams.batch_size, self.trainer.world_size, training=True)

    def after_predict(self) -> None:
        """Count the picture files that could not be predicted (the writer printed why); main() exits 1 then."""
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]  # a Trainer property its stubs omit
        self.failed_files = sum(int(getattr(callback, "failed_files", 0)) for callback in callbacks)

    def after_fit(self) -> None:
        """Test the best checkpoint (else the last weights) unless ``--test_after_fit false`` or the fit was
        interrupted, and print ``Test accuracy: ACC (test_loss LOSS, CKPT)``."""
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        if self.trainer.received_sigterm:  # after the last batch: Lightning's loops no longer look at it
            raise SIGTERMException
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")  # "" before a first save
        ckpt_path = "best" if best else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            where = best if ckpt_path else "the final weights"
            print(f"Test accuracy: {results[0]['test_acc']:.4f} (test_loss {results[0]['test_loss']:.4f}, {where})")
