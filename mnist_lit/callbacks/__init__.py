"""Callbacks: what gets written beyond scalars. None of them changes training.

:mod:`~mnist_lit.callbacks.predictions` writes ``predictions.csv``; :mod:`~mnist_lit.callbacks.tensorboard`
adds TensorBoard's Custom Scalars, HPARAMS and GRAPHS tabs; :mod:`~mnist_lit.callbacks.figures` draws the
evaluation pictures (prediction grid, confusion matrix, confident errors) with :mod:`~mnist_lit.callbacks.plots`;
:mod:`~mnist_lit.callbacks.history` keeps ``metrics.json``. The names below are the class paths the configs use
(``mnist_lit.callbacks.HParamsLogger``).
"""

from mnist_lit.callbacks.common import run_dir, tensorboard_writer
from mnist_lit.callbacks.figures import ConfidentErrors, ConfusionMatrixLogger, ValPredictionGrid
from mnist_lit.callbacks.history import MetricsHistory
from mnist_lit.callbacks.predictions import (
    PICTURE_COLUMNS,
    PredictionWriter,
    picture_rows,
    sheet_pictures,
    write_picture_predictions,
)
from mnist_lit.callbacks.tensorboard import GraphLogger, HParamsLogger, TrainValLayout, run_hyperparameters

__all__ = [
    "PICTURE_COLUMNS",
    "ConfidentErrors",
    "ConfusionMatrixLogger",
    "GraphLogger",
    "HParamsLogger",
    "MetricsHistory",
    "PredictionWriter",
    "TrainValLayout",
    "ValPredictionGrid",
    "picture_rows",
    "run_dir",
    "run_hyperparameters",
    "sheet_pictures",
    "tensorboard_writer",
    "write_picture_predictions",
]
