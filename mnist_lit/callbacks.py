"""Callbacks: what gets written beyond scalars. None of them changes training."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lit.atomic import write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` into the run directory and prints the first prediction.

    One row per predicted image, sorted by its index in the predict set:
    ``index, label, pred, prob, prob_0 .. prob_9`` where ``prob`` is the probability of
    ``pred``. Under several processes each rank's rows are gathered and rank 0 writes
    the file once (to a temporary name, then renamed).

    Pictures (``--data.predict_path``, :class:`mnist_lit.pictures.PictureFiles` batches) get instead
    :data:`PICTURE_COLUMNS` per file (:func:`picture_rows`), a table on stdout, one
    ``error: FILE: reason`` line on stderr per file that failed, and the PNG sheet of
    ``--data.predict_sheet`` (:func:`write_picture_predictions`); ``failed_files`` then counts
    the failures (the CLI exits with status 1 when it is not 0).

    Args:
        output_dir: folder for the CSV; default: the trainer's ``log_dir`` (``lightning_logs/version_N``).
        filename: name of the CSV file.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.filename = output_dir, filename
        self._rows: list[list] = []
        self._finished: list[list] | None = None  # rank 0's sorted rows, written and reported at teardown
        self.failed_files = 0

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []
        self.failed_files = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        probs = prediction["probs"].float().cpu()
        preds = prediction["preds"].cpu()
        indices = batch_indices if batch_indices is not None else range(len(preds))
        if len(batch) == 5 and isinstance(batch[1], (list, tuple)):  # pictures: mnist_lit.pictures.PictureFiles
            self._rows += picture_rows(indices, batch, probs)
            return
        labels = batch[1].cpu() if len(batch) > 1 and torch.is_tensor(batch[1]) else [None] * len(preds)
        for index, label, pred, row in zip(indices, labels, preds.tolist(), probs.tolist(), strict=False):
            self._rows.append([int(index), None if label is None else int(label), pred, row[pred], *row])

    def _gathered_rows(self, trainer) -> list[list]:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list = [None] * trainer.world_size
            dist.all_gather_object(parts, self._rows)
            return [row for part in parts for row in part]
        return self._rows

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        rows = sorted(self._gathered_rows(trainer), key=lambda row: row[0])  # a collective under DDP: every rank
        pictures = bool(rows) and isinstance(rows[0][1], str)
        self.failed_files = sum(1 for row in rows if row[-1]) if pictures else 0
        self._finished = rows if trainer.is_global_zero and rows else None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Rank 0 writes and reports once the run is over: after the progress bar has closed, which would
        otherwise draw its last line again below the report."""
        rows, self._finished = self._finished, None
        if stage != "predict" or not rows:
            return
        pictures = isinstance(rows[0][1], str)
        folder = Path(self.output_dir) if self.output_dir else run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.filename
        if pictures:
            datamodule = getattr(trainer, "datamodule", None)
            sheet = getattr(datamodule, "hparams", {}).get("predict_sheet")
            write_picture_predictions([row[1:] for row in rows], path, sheet)  # rows: [index, *PICTURE_COLUMNS]
            return
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["index", "label", "pred", "prob", *(f"prob_{d}" for d in range(10))])
        for index, label, pred, prob, *probs in rows:
            writer.writerow([index, "" if label is None else label, pred, f"{prob:.6f}", *(f"{p:.6f}" for p in probs)])
        write_text(path, table.getvalue())
        first = rows[0]
        print(f"Wrote {len(rows)} predictions to {path}")
        print(
            f"Sample {first[0]} probabilities: [{', '.join(f'{p:.4f}' for p in first[4:])}]"
            f" -> predicted digit {first[2]}" + ("" if first[1] is None else f" (label {first[1]})")
        )
        sys.stdout.flush()


# --- TensorBoard and the run folder: learning curves, images, confusion matrix, hyperparameters ---------------
# Each piece is its own callback, switched on and off in configs/mnist.yaml. All of them only read: images and
# logits that validation_step/test_step already computed, in eval mode; none draws random numbers.


def tensorboard_writer(trainer) -> torch.utils.tensorboard.SummaryWriter | None:
    """The ``SummaryWriter`` of the trainer's first ``TensorBoardLogger``; None on ranks other than 0 or without one."""
    if not trainer.is_global_zero:
        return None
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def run_dir(trainer) -> Path:
    """The run folder, next to the checkpoints: ``trainer.log_dir`` (``lightning_logs/version_N``).

    Safe to call on rank 0 alone: ``trainer.log_dir`` itself is a collective under DDP (it broadcasts
    rank 0's folder), so a rank-0-only call of it waits forever for the other ranks. This is the same
    lookup without the broadcast; on other ranks the folder may differ and must not be written.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        return Path(trainer.default_root_dir)
    folder = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return Path(folder or trainer.default_root_dir)


def _logits(outputs, owner: str) -> torch.Tensor:
    if not torch.is_tensor(outputs) or outputs.ndim != 2:
        raise TypeError(
            f"{owner} needs validation_step/test_step to return the logits (B, num_classes), "
            f"got {type(outputs).__name__}; return them or remove {owner} from the config"
        )
    return outputs


class TrainValLayout(Callback):
    """TensorBoard "Custom Scalars" tab: one chart per metric with its train, val and test curves together.

    The Scalars tab draws ``train_loss`` and ``val_loss`` on separate charts; here they share one, so the
    generalisation gap is visible at a glance. Tags are matched exactly (``^train_loss$``), so
    ``train_loss_step`` stays out. The layout is written once at the start of fit, by rank 0.

    Args:
        metrics: metric names without the stage prefix: ``["loss", "acc"]`` makes a ``loss`` chart
            (train_loss, val_loss, test_loss) and an ``acc`` chart (train_acc, val_acc, test_acc).
        category: title of the group of charts.
    """

    def __init__(self, metrics: Sequence[str] = ("loss", "acc"), category: str = "train vs val") -> None:
        self.metrics, self.category = list(metrics), category

    def on_fit_start(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer)
        if writer is not None:
            charts = {
                name: ["Multiline", [f"^{stage}_{name}$" for stage in ("train", "val", "test")]]
                for name in self.metrics
            }
            writer.add_custom_scalars({self.category: charts})


def run_hyperparameters(trainer, pl_module) -> dict[str, bool | int | float | str]:
    """The hyperparameters shown in TensorBoard's HPARAMS tab.

    The LightningModule's and the LightningDataModule's ``hparams_initial`` (the config's ``model`` and
    ``data`` sections; LightningCLI's private ``_instantiator``/``_class_path`` left out), ``max_epochs``,
    and ``seed`` (``PL_GLOBAL_SEED``, set by ``seed_everything``). Values other than bool, int, float and
    str are written as text.
    """
    params = dict(pl_module.hparams_initial)
    if trainer.datamodule is not None:
        params.update(trainer.datamodule.hparams_initial)
    params = {key: value for key, value in params.items() if not key.startswith("_")}
    params["max_epochs"] = trainer.max_epochs
    if os.environ.get("PL_GLOBAL_SEED") is not None:
        params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in params.items()}


class HParamsLogger(Callback):
    """TensorBoard HPARAMS tab: the run's hyperparameters (:func:`run_hyperparameters`) against its metrics.

    Writes the hparams plugin's three summaries (experiment: the hyperparameter and metric names;
    session start: the values; session end: success) once per run folder, by rank 0, at the end of the
    first ``fit``, ``validate`` or ``test`` of the trainer. TensorBoard reads each metric's value from the
    scalar series with the same tag in the same run, at its last step: ``val_acc`` is the last epoch's,
    ``test_acc`` the test after fit (the best checkpoint). Use it with
    ``TensorBoardLogger(default_hp_metric=False)``, so no placeholder ``hp_metric = -1`` is logged.

    Args:
        metrics: scalar tags shown as metric columns.
    """

    def __init__(self, metrics: Sequence[str] = ("val_acc", "test_acc")) -> None:
        self.metrics = list(metrics)
        self._written: set[str] = set()

    def _write(self, trainer, pl_module) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Read on every rank: computing callback_metrics can synchronise metrics across ranks. The plugin only
        # takes the metric names from here; the values TensorBoard shows are the scalar series' own.
        metrics = {name: float(trainer.callback_metrics.get(name, math.nan)) for name in self.metrics}
        writer, folder = tensorboard_writer(trainer), str(run_dir(trainer))
        if writer is None or folder in self._written:
            return
        self._written.add(folder)
        file_writer = writer._get_file_writer()
        for summary in hparams(run_hyperparameters(trainer, pl_module), metrics):
            file_writer.add_summary(summary, trainer.global_step)
        writer.flush()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)


class GraphLogger(Callback):
    """TensorBoard GRAPHS tab: the model traced on its ``example_input_array`` (in eval mode), once per fit, rank 0.

    A callback rather than ``TensorBoardLogger(log_graph=True)``, which traces the model again at every
    trainer stage and so writes a second graph into the run at the test after fit.
    """

    def on_fit_start(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer)
        example = pl_module.example_input_array
        if writer is None:
            return
        if not torch.is_tensor(example):
            rank_zero_warn("GraphLogger: set the model's example_input_array to a tensor to see its graph")
            return
        with torch.no_grad(), warnings.catch_warnings():
            # TensorBoard's add_graph traces with torch.jit.trace, which torch 2.14 calls deprecated on every
            # call: nothing a user of this callback can change, so not printed.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            writer.add_graph(pl_module, example.to(pl_module.device))  # traces in eval mode, then restores


class ValPredictionGrid(Callback):
    """TensorBoard image ``val_predictions``, every validation epoch: the first validation digits, each captioned
    ``pred P / true T`` (green when right, red when wrong). Rank 0; the sanity check is skipped.

    Args:
        num_images: digits shown, taken from the first validation batch (fewer if the batch is smaller).
        ncols: digits per row.

    Raises:
        ValueError: ``num_images`` or ``ncols`` below 1.
        TypeError: (during validation) ``validation_step`` does not return the logits (B, C).
    """

    def __init__(self, num_images: int = 32, ncols: int = 8) -> None:
        if num_images < 1 or ncols < 1:
            raise ValueError(f"ValPredictionGrid: num_images and ncols must be positive, got {num_images}, {ncols}")
        self.num_images, self.ncols = num_images, ncols
        self._sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._sample = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._sample is None and trainer.is_global_zero and not trainer.sanity_checking:
            preds = _logits(outputs, type(self).__name__)[: self.num_images].argmax(dim=1)
            self._sample = (batch[0][: self.num_images].cpu(), batch[1][: self.num_images].cpu(), preds.cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        from mnist_lit import plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        writer = tensorboard_writer(trainer)
        if self._sample is None or writer is None:
            return
        images, labels, preds = self._sample
        pairs = list(zip(preds.tolist(), labels.tolist(), strict=False))
        pixels = plots.digit_grid(
            images,
            [f"pred {p} / true {t}" for p, t in pairs],
            [plots.RIGHT if p == t else plots.WRONG for p, t in pairs],
            self.ncols,
        )
        writer.add_image("val_predictions", pixels, trainer.global_step, dataformats="HWC")


class ConfusionMatrixLogger(Callback):
    """Confusion matrix after every validation epoch and every test.

    Written: TensorBoard images ``val_confusion_matrix`` / ``test_confusion_matrix``, and in the run folder
    ``confusion_matrix_val.png`` / ``confusion_matrix_test.png`` with the counts in
    ``confusion_matrix_val.csv`` / ``confusion_matrix_test.csv`` (the last validation epoch and the last
    test; rows: true digit, columns: predicted digit; the counts sum to the images evaluated and the
    diagonal over the total is the accuracy). Counted with torchmetrics' ``MulticlassConfusionMatrix``
    on every rank from the logits validation_step/test_step return, summed over ranks at the epoch's
    end, drawn and written by rank 0. The sanity check is skipped.

    Args:
        num_classes: classes of the model's output (10 for MNIST).

    Raises:
        TypeError: (during validation or test) ``validation_step``/``test_step`` do not return the logits (B, C).
    """

    def __init__(self, num_classes: int = 10) -> None:
        self.num_classes = num_classes
        self._matrices: dict[str, MulticlassConfusionMatrix] = {}
        self._figures: dict[str, Figure] = {}  # one per stage, redrawn each epoch (plots.confusion_matrix_figure)

    def _start(self, stage: str, pl_module) -> None:
        self._matrices[stage] = MulticlassConfusionMatrix(self.num_classes).to(pl_module.device)

    def _update(self, stage: str, outputs, batch) -> None:
        if stage in self._matrices:
            self._matrices[stage].update(_logits(outputs, type(self).__name__), batch[1])

    def _finish(self, stage: str, trainer) -> None:
        from mnist_lit import plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        if stage not in self._matrices:
            return
        matrix = self._matrices.pop(stage).compute().cpu()  # a collective under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        title = (
            f"validation, epoch {trainer.current_epoch + 1}"
            if stage == "val"
            else f"test, {Path(trainer.ckpt_path).name if trainer.ckpt_path else 'current weights'}"
        )
        figure = plots.confusion_matrix_figure(matrix, f"confusion matrix: {title}", self._figures.get(stage))
        self._figures[stage] = figure
        pixels = plots.figure_to_array(figure)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_image(f"{stage}_confusion_matrix", pixels, trainer.global_step, dataformats="HWC")
        folder = run_dir(trainer)
        plots.save_png(pixels, folder / f"confusion_matrix_{stage}.png")
        lines = ["true\\pred," + ",".join(map(str, range(self.num_classes)))]
        lines += [f"{digit}," + ",".join(map(str, row)) for digit, row in enumerate(matrix.tolist())]
        write_text(folder / f"confusion_matrix_{stage}.csv", "\n".join(lines) + "\n")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._start("val", pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("val", outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish("val", trainer)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start("test", pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", outputs, batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish("test", trainer)


class ConfidentErrors(Callback):
    """The test digits the model got wrong with the highest confidence (softmax probability of its wrong answer).

    Written by rank 0 after every test: TensorBoard image ``test_confident_errors`` and
    ``test_confident_errors.png`` in the run folder, captioned ``P (probability) / true T``, most confident
    first. Each rank keeps its own top ``num_images``; rank 0 merges them.

    Args:
        num_images: digits shown.
        ncols: digits per row.

    Raises:
        ValueError: ``num_images`` or ``ncols`` below 1.
        TypeError: (during test) ``test_step`` does not return the logits (B, C).
    """

    def __init__(self, num_images: int = 16, ncols: int = 8) -> None:
        if num_images < 1 or ncols < 1:
            raise ValueError(f"ConfidentErrors: num_images and ncols must be positive, got {num_images}, {ncols}")
        self.num_images, self.ncols = num_images, ncols
        self._top: list[torch.Tensor] = []  # probs float32 (K,), images (K, 1, 28, 28), labels, preds int64 (K,)

    def _keep_top(self, parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        parts = [part for part in parts if part]
        if not parts:
            return []
        merged = [torch.cat(column) for column in zip(*parts, strict=False)]
        order = merged[0].argsort(descending=True, stable=True)[: self.num_images]
        return [column[order] for column in merged]

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._top = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        probs, preds = _logits(outputs, type(self).__name__).float().softmax(dim=1).max(dim=1)
        wrong = preds != batch[1]
        if self._top and len(self._top[0]) == self.num_images:  # only those that beat the current top
            wrong &= probs > self._top[0][-1].to(probs.device)
        if wrong.any():
            found = [probs[wrong].cpu(), batch[0][wrong].cpu(), batch[1][wrong].cpu(), preds[wrong].cpu()]
            self._top = self._keep_top([self._top, found])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        from mnist_lit import plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        parts = [self._top]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts = [None] * trainer.world_size
            dist.all_gather_object(parts, self._top)
        top = self._keep_top(parts)
        if not trainer.is_global_zero or not top:
            return
        probs, images, labels, preds = top
        captions = [
            f"{p} ({prob:.0%}) / true {t}"
            for prob, p, t in zip(probs.tolist(), preds.tolist(), labels.tolist(), strict=False)
        ]
        pixels = plots.digit_grid(images, captions, [plots.WRONG] * len(captions), self.ncols)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_image("test_confident_errors", pixels, trainer.global_step, dataformats="HWC")
        plots.save_png(pixels, run_dir(trainer) / "test_confident_errors.png")


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
    appends the ones it trains. ``learning_curves.png`` (train against val loss and accuracy per epoch,
    test as dashed lines) is drawn at the end of fit and of every test. Rank 0 only.

    Args:
        filename: name of the JSON file.
        curves_filename: name of the PNG file.
    """

    def __init__(self, filename: str = "metrics.json", curves_filename: str = "learning_curves.png") -> None:
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
        from mnist_lit import plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / self.filename, json.dumps(self._record, indent=2) + "\n")
        if curves:
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


#: The columns of ``predictions.csv`` for pictures. ``pred``/``confidence``/``prob_*``: the digit of a picture of
#: one digit (empty for a number: see ``digits``); ``digits``: the number read left to right; ``digit_confidences``:
#: each digit's probability, space-separated; ``boxes``: each digit's ``x0 y0 x1 y1`` in the picture's pixels,
#: ``;``-separated; ``error``: why a file gave no answer (unreadable, "no digit found", "not a digit: ...").
PICTURE_COLUMNS = [
    "file",
    "pred",
    "confidence",
    "digits",
    "digit_confidences",
    "boxes",
    *(f"prob_{d}" for d in range(10)),
    "error",
]


def picture_rows(indices, batch, probs: torch.Tensor) -> list[list]:
    """One row ``[index, *PICTURE_COLUMNS values]`` per file of a :class:`mnist_lit.pictures.PictureFiles` batch
    ``(crops, files, errors, counts, quads)``, whose crops' probabilities float32 (sum K, 10) are ``probs``;
    the number is read and refused by :func:`mnist_lit.pictures.verdict.read_digits`."""
    from mnist_lit.pictures import PictureDigits, read_digits  # OpenCV, when pictures are predicted

    _, files, errors, counts, quads = batch
    rows, start = [], 0
    for index, file, error, count, quad in zip(indices, files, errors, counts, quads, strict=False):
        part, start = probs[start : start + count], start + count
        picture = PictureDigits(file, torch.zeros(count, 1, 28, 28, dtype=torch.uint8), quad, (0, 0), error)
        reading = read_digits(picture, part)
        one = len(reading.digits) == 1
        boxes = ";".join(" ".join(f"{v:.0f}" for v in (*q.min(0), *q.max(0))) for q in quad) if reading.digits else ""
        rows.append(
            [
                int(index),
                file,
                reading.pred,
                reading.confidence,
                reading.digits,
                " ".join(f"{c:.6f}" for c in reading.confidences),
                boxes,
                part[0].tolist() if one else None,
                reading.error,
            ]
        )
    return rows


def write_picture_predictions(rows: Sequence[Sequence], path: str | Path, sheet: str | Path | None = None) -> None:
    """Report predictions on picture files: CSV, a table on stdout, errors on stderr, optional PNG sheet.

    Args:
        rows: per file, in order, ``(file, pred, confidence, digits, digit_confidences, boxes, probs, error)``
            (:func:`picture_rows`): ``pred`` the digit of a one-digit picture (else None), ``confidence``
            the probability that the whole reading is right (product over its digits), ``digits`` the
            number read, ``probs`` the 10 probabilities of a one-digit picture (else None); a file that
            failed has empty values and ``error`` a one-line message (``""`` otherwise).
        path: the CSV with :data:`PICTURE_COLUMNS`, written atomically (empty cells where not applicable).
        sheet: a PNG path for :func:`mnist_lit.sheet.render_sheet`, or ``None``.
    """
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(PICTURE_COLUMNS)
    for file, pred, confidence, digits, digit_confidences, boxes, probs, error in rows:
        writer.writerow(
            [
                file,
                "" if pred is None else pred,
                "" if confidence is None else f"{confidence:.6f}",
                digits,
                digit_confidences,
                boxes,
                *([""] * 10 if probs is None else [f"{p:.6f}" for p in probs]),
                error,
            ]
        )
    write_text(path, table.getvalue())
    width = max(len("file"), *(len(row[0]) for row in rows))
    print(f"{'file':<{width}}  digits      confidence")
    for file, _, confidence, digits, *_, error in rows:
        reason = error.split(": ", 1)[-1] if error.startswith(f"{file}: ") else error
        print(
            f"{file:<{width}}  "
            + (f"{'-':<10}           -  error: {reason}" if error else f"{digits:<10}  {confidence:>10.4f}")
        )
    failed = [row[-1] for row in rows if row[-1]]
    for error in failed:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"Predicted {len(rows) - len(failed)} of {len(rows)} pictures"
        + (f" ({len(failed)} failed or hold no digit, see the error lines)" if failed else "")
        + f"; wrote {path}"
    )
    if sheet is not None:
        from mnist_lit.sheet import SHEET_MAX_IMAGES, render_sheet

        shown = min(len(rows), SHEET_MAX_IMAGES)
        render_sheet([(row[0], row[3], row[2], row[-1]) for row in rows], sheet)
        print(f"Wrote the sheet of {shown} of {len(rows)} pictures to {sheet}")
    sys.stdout.flush()
    sys.stderr.flush()
