"""K-fold models as one ensemble: a finished ``cv`` run folder used as a model.

``python -m mnist_lit cv --folds K`` trains K models, each on all training images but one fold, and keeps
each fold's checkpoints in ``cv_N/fold_k/checkpoints/``. Given that folder, ``test``, ``predict``,
``export`` and ``serve`` use the K models together: the ensemble's probabilities are the mean of its
members' probabilities (each member scales its own uint8 input), its prediction their argmax.

    python -m mnist_lit test    --ckpt_path lightning_logs/cv_0
    python -m mnist_lit predict --ckpt_path lightning_logs/cv_0 --data.predict_path my_digits/
    python -m mnist_lit export  --ckpt_path lightning_logs/cv_0 --format onnx --output ensemble.onnx

Members: the best checkpoint by ``val_acc`` of every fold (:func:`mnist_lit.runs.best_checkpoint`, as
``--ckpt_path best`` picks within a run), each loaded and verified by :func:`mnist_lit.checkpoint.load_model`.
A cv run counts as finished when every fold 0..K-1 has its ``fold_K/fold_result.json`` (``cv`` writes it when
the fold's training ends, also for ``cv --fold K`` jobs before ``--collect``) or a row in ``cv_results.csv``. Without ``--config``, ``test``/``predict`` take their settings from fold 0's
``config.yaml`` (the folds differ only in which fold they validated on) and log into
``cv_N/ensemble/version_M/``. ``validate`` is refused: every image of the training file trained all but
one member, so the ensemble has no held-out validation data.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit import run_settings
from mnist_lit.checkpoint import load_model
from mnist_lit.data_choice import check_eval, uses_pictures
from mnist_lit.errors import CheckpointError
from mnist_lit.model import NUM_CLASSES, MNISTClassifier
from mnist_lit.runs import CONFIG_NAME, best_checkpoint, data_settings, evaluate_in_a_new_folder, read_config

RESULTS_NAME = "cv_results.csv"  # written by `cv` (mnist_lit.commands.cv.cv_main), a row per finished fold
FOLD_RESULT = "fold_result.json"  # fold_K/fold_result.json: written by `cv` when fold K has finished
ENSEMBLE_LOGS = "ensemble"  # cv_N/ensemble/version_M: the logs of test/predict runs of the ensemble


def is_cv_run(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder made by ``cv`` (it holds ``cv_results.csv`` or ``fold_k`` folders)."""
    if path is None or not Path(path).is_dir():
        return False
    folder = Path(path)
    return (folder / RESULTS_NAME).is_file() or any(p.is_dir() for p in folder.glob("fold_[0-9]*"))


def member_checkpoints(folder: str | Path) -> list[Path]:
    """The best checkpoint (by ``val_acc``) of every fold of the finished cv run ``folder``, fold 0 first.

    Raises:
        CheckpointError: the run has not finished all of its ``num_folds`` folds (``cv_results.csv``
            and fold 0's ``config.yaml``), or a fold kept no checkpoint.
    """
    folder = Path(folder)
    finished = {int(p.parent.name.removeprefix("fold_")) for p in folder.glob(f"fold_[0-9]*/{FOLD_RESULT}")}
    if (folder / RESULTS_NAME).is_file():  # runs from before fold_result.json
        with open(folder / RESULTS_NAME, newline="") as handle:
            finished |= {int(row["fold"]) for row in csv.DictReader(handle) if (row.get("fold") or "").isdigit()}
    finished_folds = sorted(finished)
    num_folds = data_settings(read_config(folder / "fold_0" / CONFIG_NAME)).get("num_folds")
    if not isinstance(num_folds, int):
        raise CheckpointError(
            f"{folder}: not a usable cv run: {folder / 'fold_0' / CONFIG_NAME} is missing or names no "
            "data.num_folds; give one fold's .ckpt file, or run cv again"
        )
    if finished_folds != list(range(num_folds)):
        done = ", ".join(map(str, finished_folds)) or "none"
        raise CheckpointError(
            f"{folder}: an unfinished cv run (folds finished: {done} of "
            f"{num_folds}); an ensemble "
            "needs every fold: run cv to the end, or give one fold's .ckpt file"
        )
    members = []
    for fold in finished_folds:
        best = best_checkpoint(folder / f"fold_{fold}")
        if best is None:
            raise CheckpointError(
                f"{folder / f'fold_{fold}'}: no best checkpoint (by val_acc) in its checkpoints/ "
                "(deleted, or cv ran with checkpointing off); an ensemble needs each fold's best "
                "model: train that fold again"
            )
        members.append(best)
    return members


class EnsembleClassifier(MNISTClassifier):
    """The mean of several trained :class:`MNISTClassifier` models' probabilities, as one LightningModule.

    Build it with :meth:`from_members` (or :func:`load_ensemble`). Input: uint8 pixels (N, 1, 28, 28) as
    for each member. :meth:`probabilities` is float32 (N, 10), the mean over members; :meth:`forward`
    returns its logarithm as logits (so ``softmax(logits)`` gives the mean back, and cross-entropy on them
    is the ensemble's negative log-likelihood). Testing logs ``test_acc``/``test_loss`` of the ensemble
    and ``member{k}_test_acc`` of each member on the same images. Its hyperparameters are member 0's.
    """

    members: nn.ModuleList
    member_test_acc: nn.ModuleList

    @classmethod
    def from_members(cls, members: Sequence[MNISTClassifier]) -> EnsembleClassifier:
        """The ensemble of ``members`` (at least one, all of one data set), in eval mode.

        Raises:
            CheckpointError: no members, or members trained on different data sets or with different
                hyperparameters (models of different runs).
        """
        if not members:
            raise CheckpointError("an ensemble needs at least one model")
        datasets = sorted({m.hparams.dataset for m in members})
        if len(datasets) > 1:
            raise CheckpointError(
                f"the ensemble's models were trained on different data sets ({', '.join(datasets)}); "
                "use models of one data set"
            )
        for k, member in enumerate(members[1:], start=1):
            differing = sorted(
                key
                for key in member.hparams.keys() | members[0].hparams.keys()
                if member.hparams.get(key) != members[0].hparams.get(key)
            )
            if differing:
                key = differing[0]
                raise CheckpointError(
                    f"the ensemble's models 0 and {k} were trained with different settings (model.{key} "
                    f"{members[0].hparams.get(key)!r} vs {member.hparams.get(key)!r}); an ensemble is "
                    "the folds of one cv run: use one run's folds"
                )
        ensemble = cls(**dict(members[0].hparams))  # MNISTClassifier's own __init__: its hyperparameters only
        del ensemble.net  # the members do the work
        ensemble.members = nn.ModuleList(members)
        ensemble.member_test_acc = nn.ModuleList(MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in members)
        return ensemble.eval()

    def _member_models(self) -> list[MNISTClassifier]:
        return cast(list[MNISTClassifier], list(self.members))

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean of the members' probabilities: float32 (N, 10), rows sum to 1, for uint8 pixels (N, 1, 28, 28)."""
        return torch.stack([member.probabilities(pixels) for member in self._member_models()]).mean(dim=0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits float32 (N, 10): ``log`` of :meth:`probabilities` (floored at the smallest float32)."""
        return self.probabilities(pixels).clamp_min(torch.finfo(torch.float32).tiny).log()

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The ensemble's logits (B, 10) and metrics, plus each member's accuracy on the batch."""
        logits = super().test_step(batch, batch_idx)
        images, labels = batch
        metrics = cast(list[MulticlassAccuracy], list(self.member_test_acc))
        for k, (member, metric) in enumerate(zip(self._member_models(), metrics, strict=True)):
            metric.update(member(images).detach(), labels)
            self.log(f"member{k}_test_acc", metric, on_step=False, on_epoch=True)
        return logits


def load_ensemble(folder: str | Path) -> tuple[EnsembleClassifier, list[Path], dict[str, Any]]:
    """The ensemble of a finished cv run: (model on the CPU in eval mode, member checkpoint paths, fold 0's
    checkpoint dict).

    Raises:
        CheckpointError: see :func:`member_checkpoints`, :func:`mnist_lit.checkpoint.load_model` and
            :meth:`EnsembleClassifier.from_members`.
    """
    paths = member_checkpoints(folder)
    loaded = [load_model(path) for path in paths]
    return EnsembleClassifier.from_members([model for model, _ in loaded]), paths, loaded[0][1]


def load_trained(path: str | Path) -> tuple[MNISTClassifier, dict[str, Any]]:
    """What ``export`` and ``serve`` load: a checkpoint file's model (:func:`mnist_lit.checkpoint.load_model`)
    or, for a cv run folder, its ensemble with fold 0's checkpoint dict (for the data settings).

    Raises:
        CheckpointError: see :func:`mnist_lit.checkpoint.load_model` and :func:`load_ensemble`.
    """
    if is_cv_run(path):
        model, paths, checkpoint = load_ensemble(path)
        print(describe(path, paths), file=sys.stderr)
        return model, checkpoint
    return load_model(path)


def resolve_trained(path: str | Path) -> str | Path:
    """What ``export --ckpt_path`` and ``serve --ckpt_path`` name: ``best``/``last`` is that checkpoint of the newest
    training run in ``lightning_logs/`` (:func:`mnist_lit.run_settings.newest_or_error`), named on stderr as
    ``test`` and ``predict`` do; a file or a cv run folder is returned as it is.

    Raises:
        CheckpointError: ``best``/``last`` and the newest run has no such checkpoint, or there is no run.
    """
    if str(path) not in run_settings.KEYWORDS:
        return path
    found = run_settings.newest_or_error(Path("lightning_logs"), str(path))
    print(f"Using checkpoint {found}", file=sys.stderr)
    return found


def describe(folder: str | Path, paths: Sequence[Path]) -> str:
    """One line naming the ensemble's members."""
    names = ", ".join(str(p.relative_to(Path(folder))) if p.is_relative_to(Path(folder)) else str(p) for p in paths)
    return f"Ensemble of {len(paths)} models from {folder} (mean of their probabilities): {names}"


def ensemble_logger(folder: Path) -> dict[str, Any]:
    """The TensorBoard logger of ``test``/``predict`` runs of the ensemble: ``folder/ensemble/version_M``."""
    return {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(folder), "name": ENSEMBLE_LOGS, "version": None, "default_hp_metric": False},
    }


def settle_cli(parser: Any, argv: list[str], subcommand: str, config: Any) -> tuple[Any, EnsembleClassifier]:
    """For ``test``/``predict``/``validate --ckpt_path CV_RUN``: the parsed configuration to run with and the
    ensemble. Called by :class:`mnist_lit.lightning_cli.MNISTLightningCLI` before anything is built.

    The settings start from fold 0's ``config.yaml``, then the command's ``--config`` files and flags. Without
    ``--config`` the logs go to ``CV_RUN/ensemble/version_M`` (unless ``--trainer.logger`` is given), never into
    a fold's folder; ``ckpt_path`` is cleared, as the model is the ensemble itself.

    Raises:
        CheckpointError: ``validate`` (no held-out data), or see :func:`load_ensemble` and
            :func:`mnist_lit.check_eval`.
    """
    folder = Path(config[subcommand].ckpt_path)
    if subcommand == "validate":
        raise CheckpointError(
            f"validate --ckpt_path {folder}: every training image trained all but one of its fold "
            "models, so the ensemble has no held-out validation data; use test, or validate one "
            "fold's checkpoint"
        )
    model, paths, first = load_ensemble(folder)
    at = argv.index(subcommand) + 1
    base = run_settings.base_config(paths[0], first, evaluate=True)
    logger = []
    if not config[subcommand].get("config") and "logger" not in run_settings.explicit_flags(argv, "trainer"):
        logger = [f"--trainer.logger={json.dumps(ensemble_logger(folder))}"]
    config = parser.parse_args([*argv[:at], *(["--config", base] if base else []), *argv[at:], *logger])
    evaluate_in_a_new_folder(config[subcommand], argv)  # a --config without a logger: never into fold 0's folder
    config[subcommand].ckpt_path = None
    data = config[subcommand]
    check_eval(subcommand, folder, first, data_settings(data), uses_pictures(data.data))
    print(describe(folder, paths), file=sys.stderr)
    return config, model
