"""Callbacks: what gets written beyond scalars. None of them changes training."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` into the run directory and prints the first prediction.

    One row per predicted image, sorted by its index in the predict set:
    ``index, label, pred, prob, prob_0 .. prob_9`` where ``prob`` is the probability of
    ``pred``. Under several processes each rank's rows are gathered and rank 0 writes
    the file once (to a temporary name, then renamed).

    Args:
        output_dir: folder for the CSV; default: the trainer's ``log_dir`` (``lightning_logs/version_N``).
        filename: name of the CSV file.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.filename = output_dir, filename
        self._rows: list[list] = []

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        probs = prediction["probs"].float().cpu()
        preds = prediction["preds"].cpu()
        labels = batch[1].cpu() if len(batch) > 1 and torch.is_tensor(batch[1]) else [None] * len(preds)
        indices = batch_indices if batch_indices is not None else range(len(preds))
        for index, label, pred, row in zip(indices, labels, preds.tolist(), probs.tolist()):
            self._rows.append([int(index), None if label is None else int(label), pred, row[pred], *row])

    def _gathered_rows(self, trainer) -> list[list]:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list = [None] * trainer.world_size
            dist.all_gather_object(parts, self._rows)
            return [row for part in parts for row in part]
        return self._rows

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        rows = sorted(self._gathered_rows(trainer), key=lambda row: row[0])
        if not trainer.is_global_zero or not rows:
            return
        folder = Path(self.output_dir) if self.output_dir else run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.filename
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "label", "pred", "prob", *(f"prob_{d}" for d in range(10))])
            for index, label, pred, prob, *probs in rows:
                writer.writerow([index, "" if label is None else label, pred, f"{prob:.6f}",
                                 *(f"{p:.6f}" for p in probs)])
        os.replace(tmp, path)
        first = rows[0]
        print(f"Wrote {len(rows)} predictions to {path}")
        print(f"Sample {first[0]} probabilities: [{', '.join(f'{p:.4f}' for p in first[4:])}]"
              f" -> predicted digit {first[2]}" + ("" if first[1] is None else f" (label {first[1]})"))
        sys.stdout.flush()


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
