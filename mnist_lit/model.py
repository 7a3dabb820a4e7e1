"""The tutorial's CNN (a plain ``nn.Module``) and the LightningModule that trains it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

NUM_CLASSES = 10


class SeedCNN(nn.Module):
    """Conv32-pool-Conv64-pool-dropout-Dense128-dropout-Dense10, as in the Keras tutorial.

    Layers: Conv2d(1, 32, 3) ReLU -> MaxPool 2 -> Conv2d(32, 64, 3) ReLU -> MaxPool 2 ->
    Dropout(``dropout1``) -> Flatten (64 x 5 x 5 = 1,600) -> Linear(1600, 128) ReLU ->
    Dropout(``dropout2``) -> Linear(128, 10). 225,034 parameters. Valid padding, as Keras's default.

    Two exact speed-ups, measured in ``benchmarks/bench_training.py`` (together about 1.8x per
    training step on 2 CPU cores): each MaxPool runs before its ReLU, which gives the same outputs
    and gradients (ReLU is monotone, so ``max(relu(a)) == relu(max(a))``) on a quarter of the
    elements; and the convolutions run in the channels-last memory format (the layout oneDNN and
    cuDNN prefer; the values are the same, only their order in memory changes).

    Weights are Glorot-uniform and biases zero, Keras's defaults for Conv2D and Dense.
    (Keras flattens channels-last, PyTorch channels-first; that only permutes Dense128's
    input rows and changes nothing the network can learn.)

    Args:
        dropout1: rate after the second pooling (tutorial: 0.25).
        dropout2: rate after Dense128 (tutorial: 0.5).

    Input: float32 (N, 1, 28, 28). Output: logits, float32 (N, 10) (no softmax).
    """

    def __init__(self, dropout1: float = 0.25, dropout2: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Dropout(dropout1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(dropout2), nn.Linear(128, NUM_CLASSES),
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


class HyperparameterError(ValueError):
    """A model hyperparameter is out of range; the message is one line that says what to do."""


class MNISTClassifier(LightningModule):
    """Trains :class:`SeedCNN` with RMSprop and cross-entropy, logging loss and accuracy.

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

    Raises:
        HyperparameterError: ``lr`` or ``eps`` not positive, ``rho`` or a dropout rate outside [0, 1).

    Logged: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``
    (per epoch) and ``train_loss_step``; ``val_count`` and ``test_count``: images evaluated in the
    epoch, summed over all processes. Epoch values cover every image of the epoch on all processes
    (under DDP too): losses are the mean over images (torchmetrics ``MeanMetric`` weighted by batch
    size), so a smaller last batch counts by its images, not as a whole batch.
    """

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                 dropout1: float = 0.25, dropout2: float = 0.5) -> None:
        super().__init__()
        for name, value, ok, allowed in (("lr", lr, lr > 0, "> 0"), ("rho", rho, 0 <= rho < 1, "in [0, 1)"),
                                         ("eps", eps, eps > 0, "> 0"), ("dropout1", dropout1, 0 <= dropout1 < 1, "in [0, 1)"),
                                         ("dropout2", dropout2, 0 <= dropout2 < 1, "in [0, 1)")):
            if not ok:
                raise HyperparameterError(f"model.{name} must be {allowed}, got {value}")
        self.save_hyperparameters()
        self.net = SeedCNN(dropout1, dropout2)
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        # Epoch metrics of each stage, updated every step as torchmetrics objects and handed to ``self.log``
        # once per epoch (a call costs about 1 ms on a CPU); Lightning computes them at the epoch's end, over
        # the batches that ran (also when max_steps or max_time stops an epoch early), summed over processes.
        self.train_metrics = self._metrics()
        self.val_metrics = self._metrics(count=True)
        self.test_metrics = self._metrics(count=True)
        self._logged: set[str] = set()  # stages whose metrics were handed to self.log this epoch

    @staticmethod
    def _metrics(count: bool = False) -> nn.ModuleDict:
        metrics = {"loss": MeanMetric(), "acc": MulticlassAccuracy(NUM_CLASSES, average="micro")}
        return nn.ModuleDict({**metrics, "count": SumMetric()} if count else metrics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits float32 (N, 10) for images float32 (N, 1, 28, 28)."""
        return self.net(x)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy loss (scalar) and logits float32 (B, 10) of a batch (images, labels);
        updates the ``stage`` metrics: mean loss over images, accuracy, and for val/test the image count."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
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

    def on_train_epoch_start(self) -> None:
        self._logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._logged.discard("test")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # Lightning's own logging cadence
            self.log("train_loss_step", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, digit grid)."""
        return self._step(batch, "val")[1].detach()

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, confident errors)."""
        return self._step(batch, "test")[1].detach()

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Returns ``probs`` float32 (N, 10) (softmax of the logits) and ``preds`` int64 (N,)."""
        probs = F.softmax(self(batch[0]), dim=1)
        return {"probs": probs, "preds": probs.argmax(dim=1)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, alpha=self.hparams.rho,
                                   eps=self.hparams.eps)
