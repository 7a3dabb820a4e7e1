"""The LightningModule that trains the tutorial's CNN (:mod:`mnist_lit.network`): scaling, loss, metrics, optimizer."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.errors import HyperparameterError
from mnist_lit.hparams import TypedHParams, refuse_nulls
from mnist_lit.network import CLASS_NAMES, NUM_CLASSES, PixelScale, SeedCNN, scale_pixels

LRSchedule = Literal["constant", "onecycle"]
Dataset = Literal["mnist", "fashion_mnist"]


class MNISTClassifier(TypedHParams, LightningModule):
    """Trains :class:`SeedCNN` with RMSprop and cross-entropy, logging loss and accuracy.

    The module owns its input contract: it takes uint8 pixels (N, 1, 28, 28), 0-255, white on
    black (the IDX layout), and scales them itself (:func:`scale_pixels` with ``pixel_scale``).
    ``pixel_scale`` and ``dataset`` are hyperparameters, so every checkpoint says how its pixels
    were scaled and which classes its outputs mean (:data:`CLASS_NAMES`, also saved as
    ``checkpoint["class_names"]``); test, predict, serve and export all read them from there.

    Hyperparameters default to the tutorial's Keras ``compile(optimizer='rmsprop')``:
    Keras RMSprop's learning rate 0.001, rho 0.9, epsilon 1e-7. PyTorch's RMSprop calls rho
    ``alpha`` and adds epsilon outside the square root (``g / (sqrt(v) + eps)``) where Keras
    adds it inside (``g / sqrt(v + eps)``); at 1e-7 the two differ only for near-zero ``v``.

    Args:
        lr: learning rate.
        rho: decay of the squared-gradient average (PyTorch ``alpha``).
        eps: epsilon added to the denominator.
        dropout1: dropout rate after the convolutions.
        dropout2: dropout rate after Dense128.
        pixel_scale: ``"unit"`` (pixels / 255, the default) or ``"raw"`` (0-255 as float, as the tutorial).
        dataset: ``"mnist"`` or ``"fashion_mnist"``: what the outputs mean. ``fit`` sets it from
            ``--data.dataset``; other commands take it from the checkpoint.
        label_smoothing: cross-entropy label smoothing of the *training* loss (``F.cross_entropy``'s
            ``label_smoothing``); ``val_loss``/``test_loss`` stay plain cross-entropy. Tutorial: 0.
        weight_decay: RMSprop's L2 penalty (added to the gradient). Tutorial: 0.
        lr_schedule: ``"constant"`` (the tutorial's) or ``"onecycle"``: the curve of PyTorch's ``OneCycleLR``
            (:func:`one_cycle_factor`) stepped every batch over the whole run (``max_epochs``): cosine warm-up
            from ``lr / 25`` to ``lr`` over the first ``warmup_fraction`` of the steps, then cosine annealing
            to ``lr / 250,000``. RMSprop's momentum stays 0 (OneCycleLR would cycle it).
        warmup_fraction: share of the steps spent warming up with ``"onecycle"`` (OneCycleLR's ``pct_start``).

    Raises:
        HyperparameterError: ``lr`` or ``eps`` not positive, ``rho``, a dropout rate or ``label_smoothing``
            outside [0, 1), ``weight_decay`` negative, one of them infinite or NaN, ``warmup_fraction``
            outside (0, 1), an unknown ``pixel_scale``, ``dataset`` or ``lr_schedule``.

    Logged: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``
    (per epoch) and ``train_loss_step``; ``val_count`` and ``test_count``: images evaluated in the
    epoch, summed over all processes. Epoch values cover every image of the epoch on all processes
    (under DDP too): losses are the mean over images (torchmetrics ``MeanMetric`` weighted by batch
    size), so a smaller last batch counts by its images, not as a whole batch; a NaN loss in any step makes the
    epoch's loss NaN (``null`` in metrics.json), never the mean of the other steps.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        rho: float = 0.9,
        eps: float = 1e-7,
        dropout1: float = 0.25,
        dropout2: float = 0.5,
        pixel_scale: PixelScale = "unit",
        dataset: Dataset = "mnist",
        label_smoothing: float = 0.0,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "constant",
        warmup_fraction: float = 0.3,
    ) -> None:
        refuse_nulls(MNISTClassifier, locals(), "model")
        super().__init__()
        if lr_schedule not in ("constant", "onecycle"):
            raise HyperparameterError(f"model.lr_schedule must be 'constant' or 'onecycle', got {lr_schedule!r}")
        if pixel_scale not in ("unit", "raw"):
            raise HyperparameterError(f"model.pixel_scale must be 'unit' or 'raw', got {pixel_scale!r}")
        if dataset not in CLASS_NAMES:
            raise HyperparameterError(f"model.dataset must be one of {', '.join(CLASS_NAMES)}, got {dataset!r}")
        # Checked here rather than by jsonargparse.typing types: those check only command-line values, while
        # checkpoints and Python callers build the module directly (and their float subclasses would be saved).
        for name, value, ok, allowed in (
            ("lr", lr, lr > 0, "> 0"),
            ("rho", rho, 0 <= rho < 1, "in [0, 1)"),
            ("eps", eps, eps > 0, "> 0"),
            ("dropout1", dropout1, 0 <= dropout1 < 1, "in [0, 1)"),
            ("dropout2", dropout2, 0 <= dropout2 < 1, "in [0, 1)"),
            ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1, "in [0, 1)"),
            ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
            ("warmup_fraction", warmup_fraction, 0 < warmup_fraction < 1, "in (0, 1)"),
        ):
            if not ok:
                raise HyperparameterError(f"model.{name} must be {allowed}, got {value}")
            if not math.isfinite(value):  # inf (1e400 on the command line, .inf in YAML): NaN from the first step
                raise HyperparameterError(f"model.{name} must be a finite number {allowed}, got {value}")
        self.save_hyperparameters()
        self.net = SeedCNN(dropout1, dropout2)
        self.class_names = CLASS_NAMES[dataset]
        self.example_input_array = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
        # Epoch metrics of each stage, updated every step as torchmetrics objects and handed to ``self.log``
        # once per epoch (each call has a cost per step); Lightning computes them at the epoch's end, over
        # the batches that ran (also when max_steps or max_time stops an epoch early), summed over processes.
        self.train_metrics = self._metrics()
        self.val_metrics = self._metrics(count=True)
        self.test_metrics = self._metrics(count=True)
        self._logged: set[str] = set()  # stages whose metrics were handed to self.log this epoch

    @staticmethod
    def _metrics(count: bool = False) -> nn.ModuleDict:
        # A ModuleDict, not a MetricCollection: a collection passes one update()'s arguments to every metric,
        # and loss (value, weight), accuracy (logits, labels) and count (n) take different ones.
        # A NaN loss (a run that diverged) makes the epoch's loss NaN: MeanMetric's default leaves it out with a
        # warning, which made the mean of the other steps read as the epoch's; nan_strategy="disable" would also drop
        # the batch weights (torchmetrics 1.9 sets them to 1), so NaN is "imputed" with NaN.
        loss = MeanMetric(nan_strategy=math.nan)
        metrics = {"loss": loss, "acc": MulticlassAccuracy(NUM_CLASSES, average="micro")}
        return nn.ModuleDict({**metrics, "count": SumMetric()} if count else metrics)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10), float32 (the parameters' dtype) for uint8 pixels (N, 1, 28, 28), 0-255.

        Raises:
            HyperparameterError: ``pixels`` is not uint8.
        """
        return self.net(scale_pixels(pixels, self.hparams.pixel_scale, next(self.net.parameters()).dtype))

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Softmax of :meth:`forward`: float32 (N, 10), rows sum to 1, for uint8 pixels (N, 1, 28, 28)."""
        return F.softmax(self(pixels), dim=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write the class names (index = label) into every checkpoint, beside the hyperparameters."""
        checkpoint["class_names"] = list(self.class_names)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy loss (scalar) and logits float32 (B, 10) of a batch (images, labels);
        updates the ``stage`` metrics: mean loss over images, accuracy, and for val/test the image count."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(
            logits, labels, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0
        )
        metrics, n = getattr(self, f"{stage}_metrics"), len(labels)
        metrics["loss"].update(loss.detach(), n)  # weighted by the batch's images: the exact mean over all
        metrics["acc"].update(logits.detach(), labels)
        if "count" in metrics:
            metrics["count"].update(n)  # 10,000 for the test set on any number of devices
        if stage not in self._logged:
            self._logged.add(stage)
            for name, metric in metrics.items():
                self.log(f"{stage}_{name}", metric, on_step=False, on_epoch=True, prog_bar=name != "count")
        return loss, logits

    def on_train_start(self) -> None:
        """After a resume, set each learning rate to the re-planned schedule's value at the step reached.

        Lightning restores the optimizer with the learning rate it had when saved (the end of the old
        curve, near 0, when the old run finished), and a ``LambdaLR`` only applies its factor at its next
        step: without this the first resumed batch would train at the old, finished schedule's rate.
        """
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                for group, base_lr, factor in zip(
                    scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=False
                ):
                    group["lr"] = base_lr * factor(scheduler.last_epoch)

    def on_train_epoch_start(self) -> None:
        self._logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._logged.discard("test")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]  # Lightning's own logging cadence (a property its stubs omit)
            self.log("train_loss_step", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, digit grid)."""
        return self._step(batch, "val")[1].detach()

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, confident errors)."""
        return self._step(batch, "test")[1].detach()

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """For a batch whose first item is uint8 pixels (N, 1, 28, 28): ``probs`` float32 (N, 10)
        (softmax of the logits) and ``preds`` int64 (N,)."""
        probs = self.probabilities(batch[0])
        return {"probs": probs, "preds": probs.argmax(dim=1)}

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """RMSprop; with ``lr_schedule: onecycle`` also a ``LambdaLR`` of :func:`one_cycle_factor` over the
        run's steps (``trainer.estimated_stepping_batches``), stepped every batch."""
        optimizer = torch.optim.RMSprop(
            self.parameters(),
            lr=self.hparams.lr,
            alpha=self.hparams.rho,
            eps=self.hparams.eps,
            weight_decay=self.hparams.weight_decay,
        )
        if self.hparams.lr_schedule == "constant":
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise HyperparameterError(
                "model.lr_schedule onecycle is planned over the whole run: set trainer.max_epochs "
                "or trainer.max_steps (not -1)"
            )
        factor = partial(one_cycle_factor, total_steps=int(total_steps), warmup_fraction=self.hparams.warmup_fraction)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def one_cycle_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Learning-rate factor at optimizer step ``step`` of ``total_steps``: PyTorch ``OneCycleLR``'s default
    curve (cosine from 1/25 up to 1 over the first ``warmup_fraction`` of the steps, then cosine down to
    1/25 / 1e4; its ``div_factor`` and ``final_div_factor``), held at the end value after ``total_steps``.

    Own function rather than ``OneCycleLR`` itself, which fixes its length when built and raises past it:
    a run resumed with a larger ``max_epochs`` would crash. Here a resumed run re-plans the curve over its
    new number of steps and continues from the step it reached.
    """
    start, end = 1 / 25, 1 / 25 / 1e4
    warmup_end, last = warmup_fraction * total_steps - 1, total_steps - 1  # OneCycleLR's phase ends
    if warmup_end > 0 and step <= warmup_end:
        return start + (1 - start) * (1 - math.cos(math.pi * step / warmup_end)) / 2
    done = min(1.0, (step - warmup_end) / max(1e-9, last - warmup_end))
    return end + (1 - end) * (1 + math.cos(math.pi * done)) / 2
