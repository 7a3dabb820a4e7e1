"""Pictures of an evaluation: the validation digits with their predictions, the confusion matrix, the test
digits the model got most confidently wrong (TensorBoard images and PNG/CSV files in the run folder).

They only read the images and logits that validation_step/test_step already computed, in eval mode; none draws
random numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from jsonargparse.typing import NonNegativeInt, PositiveInt  # checked by the CLI's parser: a one-line error
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lit.atomic import write_csv
from mnist_lit.callbacks.common import check_logits, run_dir, tensorboard_writer
from mnist_lit.errors import SettingError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ValPredictionGrid(Callback):
    """TensorBoard image ``val_predictions``, every validation epoch: the first validation digits, each captioned
    ``pred P / true T`` (green when right, red when wrong). Rank 0; the sanity check is skipped.

    Args:
        num_images: digits shown, taken from the first validation batch (fewer if the batch is smaller).
        ncols: digits per row.

    Raises:
        SettingError (a ValueError): ``num_images`` or ``ncols`` not an int of 1 or more.
        TypeError: (during validation) ``validation_step`` does not return the logits (B, C).
    """

    def __init__(self, num_images: PositiveInt = 32, ncols: PositiveInt = 8) -> None:
        if not (isinstance(num_images, int) and isinstance(ncols, int) and num_images >= 1 and ncols >= 1):
            raise SettingError(f"ValPredictionGrid: num_images and ncols must be positive, got {num_images}, {ncols}")
        self.num_images, self.ncols = num_images, ncols
        self._sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._sample = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._sample is None and trainer.is_global_zero and not trainer.sanity_checking:
            preds = check_logits(outputs, type(self).__name__)[: self.num_images].argmax(dim=1)
            self._sample = (batch[0][: self.num_images].cpu(), batch[1][: self.num_images].cpu(), preds.cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        import mnist_lit.callbacks.plots as plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

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

    Drawing a matrix (matplotlib) costs far more than counting it, so during ``fit`` the validation image is
    drawn every ``val_every_n_epochs`` epochs, and the fit's last validation is always drawn: at the end of
    fit, with the global step of that validation. The CSV is written after every validation epoch.

    Args:
        num_classes: classes of the model's output (10 for MNIST).
        val_every_n_epochs: during fit, draw the validation image after epochs n, 2n, ... (1: every epoch);
            0: only the last validation of the fit.

    Raises:
        SettingError (a ValueError): ``val_every_n_epochs`` not an int of 0 or more.
        TypeError: (during validation or test) ``validation_step``/``test_step`` do not return the logits (B, C).
    """

    def __init__(self, num_classes: PositiveInt = 10, val_every_n_epochs: NonNegativeInt = 1) -> None:
        if not (isinstance(val_every_n_epochs, int) and val_every_n_epochs >= 0):
            raise SettingError(f"ConfusionMatrixLogger: val_every_n_epochs must be 0 or more, got {val_every_n_epochs}")
        self.num_classes, self.val_every_n_epochs = num_classes, val_every_n_epochs
        self._matrices: dict[str, MulticlassConfusionMatrix] = {}
        self._figures: dict[str, Figure] = {}  # one per stage, redrawn each epoch (plots.confusion_matrix_figure)
        self._undrawn: tuple[torch.Tensor, str, int] | None = None  # fit's last val matrix, title, global step

    def _start(self, stage: str, pl_module) -> None:
        self._matrices[stage] = MulticlassConfusionMatrix(self.num_classes).to(pl_module.device)

    def _update(self, stage: str, outputs, batch) -> None:
        if stage in self._matrices:
            self._matrices[stage].update(check_logits(outputs, type(self).__name__), batch[1])

    def _finish(self, stage: str, trainer) -> None:
        if stage not in self._matrices:
            return
        matrix = self._matrices.pop(stage).compute().cpu()  # a collective under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        columns = ["true\\pred", *map(str, range(self.num_classes))]
        rows = [dict(zip(columns, [digit, *row], strict=True)) for digit, row in enumerate(matrix.tolist())]
        write_csv(run_dir(trainer) / f"confusion_matrix_{stage}.csv", columns, rows)
        title = (
            f"validation, epoch {trainer.current_epoch + 1}"
            if stage == "val"
            else f"test, {Path(trainer.ckpt_path).name if trainer.ckpt_path else 'current weights'}"
        )
        if stage == "val":
            self._undrawn = None
            every = self.val_every_n_epochs
            if trainer.state.fn == TrainerFn.FITTING and (not every or (trainer.current_epoch + 1) % every):
                self._undrawn = (matrix, title, trainer.global_step)  # drawn in on_fit_end if it stays the last
                return
        self._draw(stage, matrix, title, trainer, trainer.global_step)

    def _draw(self, stage: str, matrix: torch.Tensor, title: str, trainer, step: int) -> None:
        import mnist_lit.callbacks.plots as plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        figure = plots.confusion_matrix_figure(matrix, f"confusion matrix: {title}", self._figures.get(stage))
        self._figures[stage] = figure
        pixels = plots.figure_to_array(figure)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_image(f"{stage}_confusion_matrix", pixels, step, dataformats="HWC")
        plots.save_png(pixels, run_dir(trainer) / f"confusion_matrix_{stage}.png")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)  # a fit stopped by Ctrl-C keeps the last image beside its CSV

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._undrawn is not None:
            matrix, title, step = self._undrawn
            self._undrawn = None
            self._draw("val", matrix, title, trainer, step)

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
        SettingError (a ValueError): ``num_images`` or ``ncols`` not an int of 1 or more.
        TypeError: (during test) ``test_step`` does not return the logits (B, C).
    """

    def __init__(self, num_images: PositiveInt = 16, ncols: PositiveInt = 8) -> None:
        if not (isinstance(num_images, int) and isinstance(ncols, int) and num_images >= 1 and ncols >= 1):
            raise SettingError(f"ConfidentErrors: num_images and ncols must be positive, got {num_images}, {ncols}")
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
        probs, preds = check_logits(outputs, type(self).__name__).float().softmax(dim=1).max(dim=1)
        wrong = preds != batch[1]
        if self._top and len(self._top[0]) == self.num_images:  # only those that beat the current top
            wrong &= probs > self._top[0][-1].to(probs.device)
        if wrong.any():
            found = [probs[wrong].cpu(), batch[0][wrong].cpu(), batch[1][wrong].cpu(), preds[wrong].cpu()]
            self._top = self._keep_top([self._top, found])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        import mnist_lit.callbacks.plots as plots  # matplotlib: imported when a plot is drawn, not by `fit --help`

        parts: list[list[torch.Tensor]] = [self._top]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts = [[] for _ in range(trainer.world_size)]
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
