"""LightningCLI wiring: ``fit``/``validate``/``test``/``predict`` and friendly errors."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from mnist_lit.callbacks import PredictionWriter
from mnist_lit.data import DataError, MNISTDataModule
from mnist_lit.distributed import per_device_batch_size
from mnist_lit.model import MNISTClassifier


class MNISTLightningCLI(LightningCLI):
    """LightningCLI plus ``--test_after_fit``: after ``fit``, test the best checkpoint (the tutorial's ``evaluate``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, evaluate the best checkpoint on the test set and print test_acc.")

    def before_fit(self) -> None:
        """Several processes: refuse a global ``batch_size`` they don't divide before any process starts."""
        per_device_batch_size(self.datamodule.hparams.batch_size, self.trainer.world_size, training=True)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        callback = self.trainer.checkpoint_callback
        ckpt_path = "best" if callback is not None and callback.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            where = callback.best_model_path if ckpt_path else "the final weights"
            print(f"Test accuracy: {results[0]['test_acc']:.4f} (test_loss {results[0]['test_loss']:.4f}, {where})")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lit`` and ``mnist-lit``."""
    try:
        MNISTLightningCLI(
            MNISTClassifier,
            MNISTDataModule,
            seed_everything_default=0,
            trainer_defaults={"callbacks": [PredictionWriter()]},
            auto_configure_optimizers=False,
            args=args,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
