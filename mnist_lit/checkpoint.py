"""Checkpoints that are never half-written, verified when loaded, and never run code when loaded.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary file is
made by ``tempfile.mkstemp()`` in the system temp folder and then *moved* (fsspec 2026.9,
``LocalFileOpener.commit``): across file systems that move is a copy into the final name, and
nothing is fsynced, so a kill at the wrong moment can leave a truncated ``last.ckpt``.
:class:`SafeCheckpointIO` writes beside the target and renames (:func:`mnist_lit.atomic.atomic_write`).

Every checkpoint saved through :class:`SafeCheckpointIO` carries a SHA-256 of its own content
(:func:`content_sha256`: every tensor's bytes, dtype and shape and every plain value, in a fixed
order) under :data:`CHECKSUM_KEY`. It lives inside the file, so a checkpoint and its checksum are
replaced together by one atomic rename (a sidecar file could go stale if a kill fell between two
renames).

Loading goes through :func:`load_checkpoint`: the file is recognised first (:func:`identify_file`:
a text file, an ONNX or TorchScript export and other zip archives are named for what they are),
then ``torch.load(weights_only=True)`` (tensors and plain containers only, no pickled code), then
the checksum is verified; every failure is one line. :func:`check_compatible` says when a
checkpoint belongs to another architecture, and :func:`load_model` rebuilds the trained
:class:`mnist_lit.model.MNISTClassifier` (what ``export`` and ``serve`` run).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import pickle
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from mnist_lit.atomic import atomic_write
from mnist_lit.errors import CheckpointError, no_checkpoint_file
from mnist_lit.model import MNISTClassifier

#: Keys of the content checksum and the save time (s since the epoch; :mod:`mnist_lit.resume`) in our checkpoints.
CHECKSUM_KEY, SAVED_AT_KEY = "mnist_lit_sha256", "mnist_lit_saved_at"
#: Model hyperparameters that older checkpoints kept among the datamodule's (moved into the model).
MOVED_TO_MODEL = ("pixel_scale", "dataset")

log = logging.getLogger(__name__)


def content_sha256(checkpoint: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint dict's content, :data:`CHECKSUM_KEY` itself left out.

    Walks the dict in a fixed order (mappings by key, sequences by position): a tensor adds its
    dtype, shape and raw bytes (on the CPU, contiguous), any other value its type name and ``repr``.
    So the digest is the same before ``torch.save`` and after ``torch.load``, and any changed
    tensor byte or value changes it.
    """
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if torch.is_tensor(value):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            keys = sorted((key for key in value if key != CHECKSUM_KEY), key=repr)
            digest.update(f"M{len(keys)}".encode())
            for key in keys:
                digest.update(f"K{key!r}".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"S{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"V{type(value).__name__}:{value!r}".encode())

    feed(checkpoint)
    return digest.hexdigest()


def identify_file(path: Path) -> str | None:
    """What ``path`` holds if it is plainly not a Lightning checkpoint, else ``None``.

    Returns one of: ``"an empty file"``, ``"a text file (first line: ...)"``, ``"an ONNX model"``,
    ``"a TorchScript archive"``, ``"a zip archive of NAME, ..."``. A ``torch.save`` zip archive
    (``*/data.pkl`` and no TorchScript ``code/``) or a legacy pickle gives ``None``.
    """
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError):
            return None  # a damaged archive: torch.load says how
        if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
            return "a TorchScript archive (what `export --format torchscript` writes)"
        if any(name.endswith("data.pkl") for name in names):
            return None
        return f"a zip archive of {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return "an ONNX model (what `export --format onnx` writes)"
    if b"\0" not in head:
        try:
            first = head.decode("utf-8").strip().splitlines()[0][:60] if head.strip() else ""
        except UnicodeDecodeError:
            return None
        return f"a text file (first line: {first!r})"
    return None


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", weights_only: bool = True, flag: str = "--ckpt_path"
) -> dict[str, Any]:
    """Recognise, ``torch.load`` (by default with ``weights_only=True``) and verify a Lightning checkpoint.

    Args:
        path: the ``.ckpt`` file.
        map_location: as in ``torch.load`` (default: everything on the CPU).
        weights_only: ``True`` (default) refuses pickled Python objects; ``False`` only for files you trust.
        flag: the option that named ``path``, for the messages (``--ckpt_path`` also takes best / last).

    Returns:
        The checkpoint dict (``state_dict``, ``epoch``, ``global_step``, ``hyper_parameters``, ...).

    Raises:
        CheckpointError: one line naming the file: missing, a folder, not a checkpoint (text,
            ONNX, TorchScript, other zip: :func:`identify_file`), damaged or truncated, a content
            checksum that does not match (:data:`CHECKSUM_KEY`), pickled objects that
            ``weights_only=True`` refuses, or not a dict with a ``state_dict``.
    """
    path = Path(path)
    if path.is_dir():
        example = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else "RUN/checkpoints/last.ckpt"
        keywords = ", or --ckpt_path best / last" if flag == "--ckpt_path" else ""
        raise CheckpointError(
            f"{path}: is a folder, not a checkpoint file; give a .ckpt file, e.g. {example}{keywords}"
        )
    if not path.exists():
        raise CheckpointError(no_checkpoint_file(path, flag))
    kind = identify_file(path) if path.is_file() else "not a regular file"  # a device, pipe or socket (/dev/null)
    if kind is not None:
        raise CheckpointError(
            f"{path}: {kind}, not a checkpoint; give the .ckpt file written by fit, e.g. "
            "lightning_logs/version_N/checkpoints/last.ckpt"
        )
    checkpoint = _torch_load(path, map_location, weights_only)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'); give a .ckpt file written by mnist_lit fit"
        )
    saved = checkpoint.get(CHECKSUM_KEY)
    if saved is None:
        log.info(f"Notice: {path} has no content checksum (saved before mnist_lit checked them); not verified")
    elif saved != content_sha256(checkpoint):
        raise CheckpointError(
            f"{path}: damaged: checksum mismatch (its content no longer has the SHA-256 saved in "
            "it); use another checkpoint, e.g. last.ckpt or the best one"
        )
    return checkpoint


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    """``torch.load`` with its exceptions turned into one-line :class:`CheckpointError` (never torch's advice)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err), re.IGNORECASE)
        if found:
            raise CheckpointError(
                f"{path}: refused, the checkpoint holds a pickled {found.group(1)}, which "
                "weights_only=True loading does not run; use a checkpoint saved by mnist_lit "
                "(tensors and plain values only)"
            ) from None
        raise CheckpointError(
            f"{path}: damaged: its pickled data cannot be read; use another checkpoint (e.g. last.ckpt or the best one)"
        ) from None
    except Exception as err:  # any other file: torch.load fails in many ways (KeyError, RuntimeError, ...)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights_only" in first_line or not first_line or not isinstance(err, (RuntimeError, OSError, ValueError)):
            first_line = type(err).__name__
        raise CheckpointError(
            f"{path}: damaged or truncated, not a readable PyTorch checkpoint ({first_line}); "
            "use another checkpoint (e.g. last.ckpt or the best one)"
        ) from None


def check_compatible(checkpoint: dict[str, Any], module: nn.Module, path: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``checkpoint["state_dict"]`` fits ``module``.

    Compares names and shapes of every tensor of ``module.state_dict()`` with the checkpoint's,
    which is what ``load_state_dict(strict=True)`` requires.

    Raises:
        CheckpointError: a tensor differs in shape, is missing, or is unexpected; the message
            names the first one with both shapes and counts the rest.
    """
    saved, own = checkpoint["state_dict"], module.state_dict()
    wrong = [
        (k, list(saved[k].shape), list(v.shape))
        for k, v in own.items()
        if k in saved and torch.is_tensor(saved[k]) and saved[k].shape != v.shape
    ]
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
    raise CheckpointError(
        f"{path}: checkpoint of another architecture ({first}; {counts}); use a checkpoint "
        f"trained with this model and its configuration"
    )


def check_hparams(checkpoint: dict[str, Any], model_class: type, path: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` if the checkpoint's ``hyper_parameters`` are not
    arguments of ``model_class`` (the CLI rebuilds the model from them, so another model's
    checkpoint would otherwise end in a parser error)."""
    params = inspect.signature(model_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in checkpoint.get("hyper_parameters") or {} if not k.startswith("_") and k not in params]
    if unknown:
        raise CheckpointError(
            f"{path}: checkpoint of another model: its hyperparameters {', '.join(unknown)} are not "
            f"arguments of {model_class.__name__}; use a checkpoint trained with this model"
        )


def model_hparams(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The :class:`MNISTClassifier` arguments a checkpoint was trained with.

    Older checkpoints kept ``pixel_scale`` and ``dataset`` among the datamodule's hyperparameters
    (:data:`MOVED_TO_MODEL`); they are taken from there when the model's own lack them.
    """
    hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    data_hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    for key in MOVED_TO_MODEL:
        if key not in hparams and key in data_hparams:
            hparams[key] = data_hparams[key]
    return hparams


def load_model(ckpt_path: str | Path) -> tuple[MNISTClassifier, dict[str, Any]]:
    """The trained model of a ``fit`` checkpoint, on the CPU in eval mode, and the checkpoint dict.

    The one way ``export``, ``serve`` and Python code load a model: :func:`load_checkpoint`
    (recognised, ``weights_only=True``, checksum verified), :func:`check_hparams`,
    :class:`MNISTClassifier` built from :func:`model_hparams` (so the pixel scaling and data set
    are the checkpoint's), :func:`check_compatible`, then ``load_state_dict(strict=True)``. The model
    takes uint8 pixels (N, 1, 28, 28); ``model.probabilities(pixels)`` gives float32 (N, 10).

    Raises:
        CheckpointError: see :func:`load_checkpoint`, :func:`check_hparams` and :func:`check_compatible`.
    """
    checkpoint = load_checkpoint(ckpt_path)
    check_hparams(checkpoint, MNISTClassifier, ckpt_path)
    model = MNISTClassifier(**model_hparams(checkpoint))
    check_compatible(checkpoint, model, ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin: atomic saves, ``weights_only=True`` loads, one-line errors.

    Use as ``Trainer(plugins=[SafeCheckpointIO()])`` (the CLI does). Remote paths (``s3://`` and
    the like) are left to Lightning's own implementation.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Add the save time and the content checksum (:data:`SAVED_AT_KEY`, :data:`CHECKSUM_KEY`), write
        ``checkpoint`` to a temporary file beside ``path``, fsync, then rename it to ``path``."""
        checkpoint = {**checkpoint, SAVED_AT_KEY: time.time()}  # kept by a copy of the file, unlike its mtime
        checkpoint = {**checkpoint, CHECKSUM_KEY: content_sha256(checkpoint)}
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(
        self, path, map_location: Callable | Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """:func:`load_checkpoint`; ``weights_only=None`` (Lightning's default) means ``True``."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        return load_checkpoint(path, map_location, True if weights_only is None else weights_only)
