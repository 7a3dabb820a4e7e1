"""TensorBoard tabs beyond the scalars: Custom Scalars layout, HPARAMS, GRAPHS.

Each piece is its own callback, switched on and off in configs/mnist.yaml; all of them only read, in eval mode,
and none draws random numbers.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from mnist_lit.callbacks.common import run_dir, tensorboard_writer


class TrainValLayout(Callback):
    """TensorBoard "Custom Scalars" tab: one chart per metric with its train, val and test curves together.

    The Scalars tab draws ``train_loss`` and ``val_loss`` on separate charts; here they share one, so the
    generalisation gap is visible at a glance. Tags are matched exactly (``^train_loss$``), so
    ``train_loss_step`` stays out. The layout is written once at the start of fit, by rank 0.

    Args:
        metrics: metric names without the stage prefix: ``["loss", "acc"]`` makes a ``loss`` chart
            (train_loss, val_loss, test_loss) and an ``acc`` chart (train_acc, val_acc, test_acc).
        category: title of the group of charts.
    """

    def __init__(self, metrics: Sequence[str] = ("loss", "acc"), category: str = "train vs val") -> None:
        self.metrics, self.category = list(metrics), category

    def on_fit_start(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer)
        if writer is not None:
            charts = {
                name: ["Multiline", [f"^{stage}_{name}$" for stage in ("train", "val", "test")]]
                for name in self.metrics
            }
            writer.add_custom_scalars({self.category: charts})


def run_hyperparameters(trainer, pl_module) -> dict[str, bool | int | float | str]:
    """The hyperparameters shown in TensorBoard's HPARAMS tab.

    The LightningModule's and the LightningDataModule's ``hparams_initial`` (the config's ``model`` and
    ``data`` sections; LightningCLI's private ``_instantiator``/``_class_path`` left out), ``max_epochs``,
    and ``seed`` (``PL_GLOBAL_SEED``, set by ``seed_everything``). Values other than bool, int, float and
    str are written as text.
    """
    params = dict(pl_module.hparams_initial)
    if trainer.datamodule is not None:
        params.update(trainer.datamodule.hparams_initial)
    params = {key: value for key, value in params.items() if not key.startswith("_")}
    params["max_epochs"] = trainer.max_epochs
    if os.environ.get("PL_GLOBAL_SEED") is not None:
        params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in params.items()}


class HParamsLogger(Callback):
    """TensorBoard HPARAMS tab: the run's hyperparameters (:func:`run_hyperparameters`) against its metrics.

    Writes the hparams plugin's three summaries (experiment: the hyperparameter and metric names;
    session start: the values; session end: success) once per run folder, by rank 0, at the end of the
    first ``fit``, ``validate`` or ``test`` of the trainer. TensorBoard reads each metric's value from the
    scalar series with the same tag in the same run, at its last step: ``val_acc`` is the last epoch's,
    ``test_acc`` the test after fit (the best checkpoint). Use it with
    ``TensorBoardLogger(default_hp_metric=False)``, so no placeholder ``hp_metric = -1`` is logged.

    Args:
        metrics: scalar tags shown as metric columns.
    """

    def __init__(self, metrics: Sequence[str] = ("val_acc", "test_acc")) -> None:
        self.metrics = list(metrics)
        self._written: set[str] = set()

    def _write(self, trainer, pl_module) -> None:
        from torch.utils.tensorboard.summary import hparams  # TensorBoard: not imported by `fit --help`

        # Read on every rank: computing callback_metrics can synchronise metrics across ranks. The plugin only
        # takes the metric names from here; the values TensorBoard shows are the scalar series' own.
        metrics = {name: float(trainer.callback_metrics.get(name, math.nan)) for name in self.metrics}
        writer, folder = tensorboard_writer(trainer), str(run_dir(trainer))
        if writer is None or folder in self._written:
            return
        self._written.add(folder)
        # Not TensorBoardLogger.log_hyperparams(params, metrics): it also logs the metrics again as scalars (a second
        # val_acc point per run) and adds these params to hparams.yaml; this writes the plugin's summaries alone.
        file_writer = writer._get_file_writer()
        for summary in hparams(run_hyperparameters(trainer, pl_module), metrics):
            file_writer.add_summary(summary, trainer.global_step)
        writer.flush()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)


class GraphLogger(Callback):
    """TensorBoard GRAPHS tab: the model traced on its ``example_input_array`` (in eval mode), once per fit, rank 0.

    A callback rather than ``TensorBoardLogger(log_graph=True)``, which traces the model again at every
    trainer stage and so writes a second graph into the run at the test after fit.
    """

    def on_fit_start(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer)
        example = pl_module.example_input_array
        if writer is None:
            return
        if not torch.is_tensor(example):
            rank_zero_warn("GraphLogger: set the model's example_input_array to a tensor to see its graph")
            return
        with torch.no_grad(), warnings.catch_warnings():
            # TensorBoard's add_graph traces with torch.jit.trace, which torch 2.14 calls deprecated on every
            # call: nothing a user of this callback can change, so not printed.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            writer.add_graph(pl_module, example.to(pl_module.device))  # traces in eval mode, then restores
