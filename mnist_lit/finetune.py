"""``fit --finetune_from CKPT``: a new run that starts from a checkpoint's weights (not a resume of its run).

Checked by :class:`mnist_lit.lightning_cli.MNISTLightningCLI` right after parsing, before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_lit.checkpoint import model_hparams
from mnist_lit.errors import CheckpointError, empty_checkpoint_flag
from mnist_lit.run_settings import explicit_flags


def check_finetune_flag(subcommand: str, finetune_from: str | None) -> None:
    """``--finetune_from`` is given to ``fit`` only, and never empty (an unset variable must not quietly train
    from scratch). Raises CheckpointError otherwise."""
    if finetune_from == "":
        raise CheckpointError(empty_checkpoint_flag("--finetune_from"))
    if finetune_from and subcommand != "fit":
        raise CheckpointError(f"--finetune_from starts a new training run: use it with fit, not {subcommand}")


def check_finetune(
    ckpt_path: str | Path, checkpoint: Mapping[str, Any], model_config: Mapping[str, Any], argv: Sequence[str]
) -> str | None:
    """Check that ``fit --finetune_from CKPT`` can use CKPT's weights in this run's model.

    The pixel scale must be the checkpoint's (weights learned on 0-1 pixels answer wrongly on 0-255).
    Another data set is transfer learning: allowed when the command names it with ``--data.dataset``.

    Returns:
        a one-line notice for fine-tuning across data sets, else ``None``.

    Raises:
        CheckpointError: another ``pixel_scale``; another data set not set by ``--data.dataset``.
    """
    hparams = model_hparams(dict(checkpoint))
    trained_scale, scale = hparams.get("pixel_scale", "unit"), model_config.get("pixel_scale")
    if scale != trained_scale:
        raise CheckpointError(
            f"--finetune_from {ckpt_path}: its weights were trained with model.pixel_scale "
            f"{trained_scale!r}, this run's model has {scale!r}; add --model.pixel_scale "
            f"{trained_scale} (weights learned on one pixel range answer wrongly on the other)"
        )
    trained_set, dataset = hparams.get("dataset", "mnist"), model_config.get("dataset")
    if trained_set == dataset:
        return None
    if "dataset" not in explicit_flags(argv, "data"):
        raise CheckpointError(
            f"--finetune_from {ckpt_path}: a {trained_set} model; this run trains on {dataset}; to fine-tune across "
            f"data sets (transfer learning) say so with --data.dataset {dataset}, or train on {trained_set}"
        )
    return f"Fine-tuning a {trained_set} model's weights on {dataset} (transfer learning): its outputs now mean {dataset}'s classes"
