"""Checkpoints that are never half-written and never run code when loaded.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary file is
made by ``tempfile.mkstemp()`` in the system temp folder and then *moved* (fsspec 2026.9,
``LocalFileOpener.commit``): across file systems that move is a copy into the final name, and
nothing is fsynced, so a kill at the wrong moment can leave a truncated ``last.ckpt``.
:class:`SafeCheckpointIO` writes beside the target and renames (:func:`mnist_lit.atomic.atomic_write`).

Loading goes through :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (tensors and
plain containers only, no pickled code), with one-line errors for a refused, damaged or missing
file; :func:`check_compatible` says when a checkpoint belongs to another architecture.
"""

from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from mnist_lit.atomic import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message is one line naming the file and what to do."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """``torch.load`` a Lightning checkpoint, by default with ``weights_only=True``.

    Args:
        path: the ``.ckpt`` file.
        map_location: as in ``torch.load`` (default: everything on the CPU).
        weights_only: ``True`` (default) refuses pickled Python objects; ``False`` only for files you trust.

    Returns:
        The checkpoint dict (``state_dict``, ``epoch``, ``global_step``, ...).

    Raises:
        CheckpointError: the file is missing, damaged (e.g. truncated), holds pickled objects
            that ``weights_only=True`` refuses, or is not a dict with a ``state_dict``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; give a .ckpt file, e.g. "
                              f"{path / 'last.ckpt'}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; give an existing --ckpt_path")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err), re.IGNORECASE)
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise CheckpointError(f"{path}: refused, the checkpoint holds {what}, which weights_only=True loading does "
                              "not run; use a checkpoint saved by mnist_lit (tensors and plain values only)") from None
    except Exception as err:  # any other file: torch.load fails in many ways (KeyError for a text file, ...)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if not isinstance(err, (RuntimeError, OSError, ValueError)) or not first_line:  # e.g. KeyError: 101
            first_line = f"{type(err).__name__}: {first_line}".rstrip(": ")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line}); the file is damaged or "
                              "truncated, use another checkpoint (e.g. last.ckpt or the best one)") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict'); give a .ckpt file "
                              "written by mnist_lit fit")
    return checkpoint


def check_compatible(checkpoint: dict[str, Any], module: nn.Module, path: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``checkpoint["state_dict"]`` fits ``module``.

    Compares names and shapes of every tensor of ``module.state_dict()`` with the checkpoint's,
    which is what ``load_state_dict(strict=True)`` requires.

    Raises:
        CheckpointError: a tensor differs in shape, is missing, or is unexpected; the message
            names the first one with both shapes and counts the rest.
    """
    saved, own = checkpoint["state_dict"], module.state_dict()
    wrong = [(k, list(saved[k].shape), list(v.shape)) for k, v in own.items()
             if k in saved and torch.is_tensor(saved[k]) and saved[k].shape != v.shape]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if not (wrong or missing or unexpected):
        return
    name = type(module).__name__
    if wrong:
        key, theirs, ours = wrong[0]
        first = f"{key} is {theirs} in the checkpoint but {ours} in this {name}"
    elif missing:
        first = f"{missing[0]} of this {name} is not in the checkpoint"
    else:
        first = f"the checkpoint has {unexpected[0]}, which this {name} lacks"
    counts = f"{len(wrong)} tensors of another shape, {len(missing)} missing, {len(unexpected)} unexpected"
    raise CheckpointError(f"{path}: checkpoint of another architecture ({first}; {counts}); use a checkpoint "
                          f"trained with this model and its configuration")


def check_hparams(checkpoint: dict[str, Any], model_class: type, path: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` if the checkpoint's ``hyper_parameters`` are not
    arguments of ``model_class`` (the CLI rebuilds the model from them, so another model's
    checkpoint would otherwise end in a parser error)."""
    params = inspect.signature(model_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in checkpoint.get("hyper_parameters") or {} if not k.startswith("_") and k not in params]
    if unknown:
        raise CheckpointError(f"{path}: checkpoint of another model: its hyperparameters {', '.join(unknown)} are not "
                              f"arguments of {model_class.__name__}; use a checkpoint trained with this model")


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin: atomic saves, ``weights_only=True`` loads, one-line errors.

    Use as ``Trainer(plugins=[SafeCheckpointIO()])`` (the CLI does). Remote paths (``s3://`` and
    the like) are left to Lightning's own implementation.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to a temporary file beside ``path``, fsync, then rename it to ``path``."""
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location: Callable | Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """:func:`load_checkpoint`; ``weights_only=None`` (Lightning's default) means ``True``."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        return load_checkpoint(path, map_location, True if weights_only is None else weights_only)
