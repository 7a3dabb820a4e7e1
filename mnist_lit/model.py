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
    epoch, summed over all processes. Epoch values are aggregated over all processes under DDP;
    ``val_loss``/``test_loss`` are the mean over all images evaluated (torchmetrics ``MeanMetric``
    weighted by batch size), so a smaller last batch counts by its images, not as a whole batch.
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
        # Validation and test metrics: updated every step, logged once per epoch (``self.log`` costs about
        # 1 ms a call on a CPU); torchmetrics sums them over all processes when they are computed.
        self.eval_metrics = nn.ModuleDict({stage: nn.ModuleDict({
            "loss": MeanMetric(), "acc": MulticlassAccuracy(NUM_CLASSES, average="micro"), "count": SumMetric(),
        }) for stage in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits float32 (N, 10) for images float32 (N, 1, 28, 28)."""
        return self.net(x)

    def _shared_step(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy loss (scalar) and logits float32 (B, 10) of a batch (images, labels)."""
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits

    def _eval_step(self, batch, stage: str) -> torch.Tensor:
        """Updates the ``stage`` metrics (mean loss over images, accuracy, image count); returns the logits."""
        loss, logits = self._shared_step(batch)
        metrics, n = self.eval_metrics[stage], len(batch[1])
        metrics["loss"].update(loss.detach(), n)  # weighted by the batch's images: the exact mean over all
        metrics["acc"].update(logits, batch[1])
        metrics["count"].update(n)  # 10,000 for the test set on any number of devices
        return logits.detach()

    def _log_eval(self, stage: str) -> None:
        for name, metric in self.eval_metrics[stage].items():
            self.log(f"{stage}_{name}", metric, prog_bar=name != "count")

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss x n, correct, n

    def _log_train(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, batch_idx: int) -> None:
        """Training metrics at a fraction of ``self.log``'s per-call cost (about 1 ms each on CPU).

        ``train_loss`` and ``train_acc`` (the exact epoch mean and accuracy over the images this rank
        trained on; ranks averaged with ``sync_dist``) are summed here and logged once, on the epoch's
        last batch; ``train_loss_step`` only on the steps the logger writes (``log_every_n_steps``).
        """
        with torch.no_grad():
            n = len(labels)
            correct = (logits.argmax(dim=1) == labels).sum()
            self._train_sums += torch.stack([loss.detach().double() * n, correct.double(), correct.new_tensor(n).double()])
        trainer = self.trainer
        if (self.global_step + 1) % trainer.log_every_n_steps == 0:  # Lightning's own logging cadence
            self.log("train_loss_step", loss, on_step=True, on_epoch=False)
        if batch_idx + 1 == trainer.num_training_batches:
            loss_sum, correct, count = self._train_sums
            self.log("train_loss", (loss_sum / count).float(), on_epoch=True, on_step=False, prog_bar=True,
                     sync_dist=True)
            self.log("train_acc", (correct / count).float(), on_epoch=True, on_step=False, prog_bar=True,
                     sync_dist=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits = self._shared_step(batch)
        self._log_train(loss, logits, batch[1], batch_idx)
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, digit grid)."""
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits float32 (B, 10), which callbacks read (confusion matrix, confident errors)."""
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Returns ``probs`` float32 (N, 10) (softmax of the logits) and ``preds`` int64 (N,)."""
        probs = F.softmax(self(batch[0]), dim=1)
        return {"probs": probs, "preds": probs.argmax(dim=1)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, alpha=self.hparams.rho,
                                   eps=self.hparams.eps)
