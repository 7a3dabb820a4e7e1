"""What the callbacks share: the TensorBoard writer, the run folder, the logits an evaluation step returns."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


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


def check_logits(outputs, owner: str) -> torch.Tensor:
    """``outputs`` of validation_step/test_step, checked to be the logits float (B, num_classes).

    Raises:
        TypeError: they are not (``owner``, the callback's name, is named in the message).
    """
    if not torch.is_tensor(outputs) or outputs.ndim != 2:
        raise TypeError(
            f"{owner} needs validation_step/test_step to return the logits (B, num_classes), "
            f"got {type(outputs).__name__}; return them or remove {owner} from the config"
        )
    return outputs
