"""The errors a user can act on. ``mnist_lit.cli.main`` catches :class:`MnistLitError` once and prints its
message as one ``error:`` line (exit status 2); every other exception is a bug and keeps its traceback.

This module imports nothing of the package, so any module may raise these without an import circle; the
wording of a message given from two places (the start-up check and the CLI) is here too, written once.
Each class also derives from the built-in exception it used to be (``ValueError``, ``RuntimeError``),
so ``except ValueError`` in user code keeps catching it.
"""

from __future__ import annotations


class MnistLitError(Exception):
    """Base class: the message is one line that names the thing and says what to do."""


class DataError(MnistLitError, ValueError):
    """A data file or data argument is unusable."""


class IdxError(MnistLitError, ValueError):
    """The file is not a usable IDX file (wrong magic number, truncated, inconsistent sizes)."""


class DownloadError(DataError):
    """No mirror delivered a verified file; the message names the mirrors' reasons and what to place by hand."""


class ImageError(DataError):
    """A picture cannot be turned into an MNIST digit; the message names the file."""


class ImageTooLargeError(ImageError):
    """The picture's header claims more pixels than the limit; it was not decoded."""


class NoDigitFoundError(ImageError):
    """The picture holds no ink that stands out from its background (e.g. a blank page)."""


class SettingError(MnistLitError, ValueError):
    """A setting would run but do nothing the user meant (e.g. ``fit`` with ``--trainer.max_epochs 0``)."""


class CheckpointError(MnistLitError, ValueError):
    """A checkpoint file cannot be used (missing, damaged, of another data set or run)."""


class HyperparameterError(MnistLitError, ValueError):
    """A model hyperparameter or input is out of range."""


class TuneError(MnistLitError, ValueError):
    """A ``cv``/``lr_find``/``tune`` option or the tune config is unusable."""


class StorageError(MnistLitError, ValueError):
    """``--storage`` cannot be opened or is not an Optuna storage."""


class ExportError(MnistLitError, ValueError):
    """The model cannot be exported, or the exported file does not match PyTorch."""


class LaunchError(MnistLitError, RuntimeError):
    """The processes of a several-process run cannot start as configured."""


def _checkpoint_keywords(flag: str) -> str:
    return " (or best / last)" if flag == "--ckpt_path" else ""


def no_checkpoint_file(path: object, flag: str = "--ckpt_path") -> str:
    """The message for a checkpoint path that names nothing on disk (``flag``: the option that gave it), the same
    from the start-up check (:mod:`mnist_lit.launch`, before Lightning is imported) and from loading."""
    return f"{path}: no such checkpoint file; give an existing {flag}{_checkpoint_keywords(flag)}"


def empty_checkpoint_flag(flag: str) -> str:
    """The message for an empty checkpoint option (an unset shell variable), never read as "none given"."""
    return f"{flag} is empty; give a .ckpt file written by fit{_checkpoint_keywords(flag)}"
