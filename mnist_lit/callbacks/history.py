"""``metrics.json`` and ``learning_curves.png``: a run read without TensorBoard."""

from __future__ import annotations

import contextlib
import json
import math

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lit.atomic import write_text
from mnist_lit.callbacks.common import run_dir


class MetricsHistory(Callback):
    """``metrics.json`` and ``learning_curves.png`` in the run folder, to read a run without TensorBoard.

    ``metrics.json``::

        {"epochs": [{"epoch": 0, "step": 55, "lr": 0.001, "train_loss": 0.41, "train_acc": 0.87,
                     "val_loss": 0.12, "val_acc": 0.96, ...}, ...],
         "test": {"test_loss": ..., "test_acc": ..., "ckpt_path": "..."},     # after a test
         "validate": {"val_loss": ..., "val_acc": ..., "ckpt_path": "..."}}   # after `validate`

    Values are the trainer's ``callback_metrics`` (epoch aggregates, already reduced over ranks; ``*_step``
    values left out); ``step`` is the global step (optimizer steps taken) at the epoch's end; ``lr`` is the first parameter group's learning rate during the epoch. The file is
    rewritten atomically after every training epoch, test and validate, so a stopped run keeps the epochs
    it finished; a resumed fit (``trainer.ckpt_path`` set) keeps the run's epochs up to its checkpoint and
    appends the ones it trains, and drops the earlier ``test`` (it tested the weights before the resume). ``learning_curves.png`` (train against val loss and accuracy per epoch,
    test as dashed lines) is drawn at the end of fit and of every test. Rank 0 only.

    Args:
        filename: name of the JSON file.
        curves_filename: name of the PNG file; ``None`` draws no curves (metrics.json only: matplotlib's first
            figure in a process costs a few tenths of a second, which configs/fast.yaml saves).
    """

    def __init__(self, filename: str = "metrics.json", curves_filename: str | None = "learning_curves.png") -> None:
        self.filename, self.curves_filename = filename, curves_filename
        self._record: dict = {"epochs": []}
        self._lr: float | None = None
        self._trained = True  # False while a resumed fit has not started training (nothing left to train)

    @staticmethod
    def _metrics(trainer, prefix: str) -> dict[str, float | None]:
        values = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(prefix) and not name.endswith("_step") and value.numel() == 1
        }
        return {name: value if math.isfinite(value) else None for name, value in sorted(values.items())}

    def _write(self, trainer, curves: bool) -> None:
        import mnist_lit.callbacks.plots as plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / self.filename, json.dumps(self._record, indent=2) + "\n")
        if curves and self.curves_filename is not None:
            fig = plots.learning_curves_figure(self._record["epochs"], self._record.get("test"))
            plots.save_png(plots.figure_to_array(fig), folder / self.curves_filename)

    def on_fit_start(self, trainer, pl_module) -> None:
        # A fit resumed from a checkpoint continues its run folder (mnist_lit.resume): start from the run's
        # record, so a resumed run appends its epochs, and one with nothing left to train keeps them all.
        path = run_dir(trainer) / self.filename
        self._record = {"epochs": []}
        if trainer.ckpt_path and path.is_file():
            with contextlib.suppress(OSError, ValueError):  # unreadable: the resumed run records from here on
                self._record = {"epochs": [], **json.loads(path.read_text())}
            # The earlier test tested the weights before this resume (its events are trimmed, mnist_lit.resume):
            # gone from here too, at once, so a resume stopped before its own test leaves no stale result.
            if self._record.pop("test", None) is not None and trainer.is_global_zero:
                self._write(trainer, curves=False)
        self._trained = False

    def on_train_start(self, trainer, pl_module) -> None:
        # Here, unlike in on_fit_start, current_epoch is restored: drop what was logged after the checkpoint.
        self._trained = True
        self._keep_epochs_before(trainer.current_epoch)

    def _keep_epochs_before(self, epoch: int) -> None:
        self._record["epochs"] = [e for e in self._record["epochs"] if e.get("epoch", epoch) < epoch]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # every rank reads the metrics (computing them can synchronise across ranks); rank 0 writes
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "lr": self._lr,
            **self._metrics(trainer, "train_"),
            **self._metrics(trainer, "val_"),
        }
        if trainer.is_global_zero:
            self._record["epochs"].append(entry)
            self._write(trainer, curves=False)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self._trained:  # resumed at max_epochs: the epochs up to the checkpoint only
            self._keep_epochs_before(trainer.current_epoch)
        if trainer.is_global_zero and self._record["epochs"]:
            self._write(trainer, curves=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            values = self._metrics(trainer, "val_")
            if trainer.is_global_zero:
                self._record["validate"] = {**values, "ckpt_path": trainer.ckpt_path}
                self._write(trainer, curves=False)

    def on_test_end(self, trainer, pl_module) -> None:
        values = self._metrics(trainer, "test_")
        if trainer.is_global_zero:
            self._record["test"] = {**values, "ckpt_path": trainer.ckpt_path}
            self._write(trainer, curves=bool(self._record["epochs"]))
