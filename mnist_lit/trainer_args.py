"""The Trainer's arguments as the configuration gives them, made consistent before Lightning sees them:
safe checkpoint IO by default, no progress bar callback when the bar is off, no logging callbacks without a logger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar

from mnist_lit.callbacks import (
    ConfidentErrors,
    ConfusionMatrixLogger,
    GraphLogger,
    HParamsLogger,
    MetricsHistory,
    TrainValLayout,
    ValPredictionGrid,
)
from mnist_lit.checkpoint import SafeCheckpointIO

#: Callbacks that write into a run folder or need a logger; dropped with ``--trainer.logger false``.
NEED_A_LOGGER = (
    LearningRateMonitor,
    TrainValLayout,
    HParamsLogger,
    GraphLogger,
    ValPredictionGrid,
    ConfusionMatrixLogger,
    ConfidentErrors,
    MetricsHistory,
)


def trainer_kwargs(kwargs: dict[str, Any], config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Trainer's keyword arguments (``kwargs`` override the parsed ``trainer`` ``config``), adjusted:

    * :class:`mnist_lit.checkpoint.SafeCheckpointIO` (atomic saves with a checksum, verified ``weights_only``
      loads) is added unless the configuration brings its own ``CheckpointIO`` plugin;
    * ``enable_progress_bar: false`` drops the configured progress bar callback too (Lightning would refuse
      the combination; the YAML keeps one only to set its refresh rate);
    * ``logger: false`` and ``fast_dev_run`` drop the callbacks of :data:`NEED_A_LOGGER` (no run folder to write
      into: :func:`without_run_folder`).

    Returns:
        the arguments, and the sorted class names of the callbacks dropped for want of a logger.
    """
    kwargs = dict(kwargs)
    plugins = kwargs.get("plugins", config.get("plugins"))
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        kwargs["plugins"] = [*plugins, SafeCheckpointIO()]
    callbacks = list(kwargs.get("callbacks", config.get("callbacks")) or [])
    if kwargs.get("enable_progress_bar", config.get("enable_progress_bar")) is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    dropped: list[str] = []
    if without_run_folder(kwargs, config):
        dropped = sorted({type(c).__name__ for c in callbacks if isinstance(c, NEED_A_LOGGER)})
        callbacks = [c for c in callbacks if not isinstance(c, NEED_A_LOGGER)]
    kwargs["callbacks"] = callbacks
    return kwargs, dropped


def without_run_folder(kwargs: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Why the run has no run folder, or "": ``"logger false"``, or ``"fast_dev_run"`` (Lightning then replaces the
    logger by one without a folder, and the reports were written into the current folder, over files of the same
    names). ``kwargs`` override the parsed ``trainer`` ``config``."""
    if kwargs.get("logger", config.get("logger")) is False:
        return "logger false"
    fast = kwargs.get("fast_dev_run", config.get("fast_dev_run"))
    return "fast_dev_run" if fast is True or (type(fast) is int and fast > 0) else ""
