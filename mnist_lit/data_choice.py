"""Which data a command may use: ``--data`` takes a class path (LightningCLI's subclass mode), and a wrong
one must be one ``error:`` line before anything is built, not a Lightning traceback halfway through; and
``validate``/``test``/``predict`` must use the data the checkpoint's model was trained for."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_lit.checkpoint import model_hparams
from mnist_lit.data import MNISTDataModule
from mnist_lit.errors import CheckpointError, SettingError


def import_pictures_datamodule(argv: Sequence[str]) -> None:
    """Import :class:`mnist_lit.pictures.PicturesDataModule` when the command line may name it (``predict``, or
    an argument mentioning it), so that jsonargparse resolves the short name ``--data PicturesDataModule``;
    other commands skip OpenCV's import (start-up)."""
    if (argv and argv[0] == "predict") or any("PicturesDataModule" in arg for arg in argv):
        import mnist_lit.pictures.datamodule  # noqa: F401  # registers the class as a LightningDataModule subclass


def data_class(data: Mapping[str, Any]) -> type:
    """The class a parsed ``data`` section names in its ``class_path`` (jsonargparse checked it imports)."""
    module, _, name = str(data.get("class_path")).rpartition(".")
    return getattr(importlib.import_module(module), name)


def uses_pictures(data: Mapping[str, Any]) -> bool:
    """Whether a parsed ``data`` section is :class:`mnist_lit.pictures.PicturesDataModule` (or a subclass)."""
    cls = data_class(data)
    if issubclass(cls, MNISTDataModule):
        return False
    from mnist_lit.pictures.datamodule import PicturesDataModule  # start-up: OpenCV only when pictures are used

    return issubclass(cls, PicturesDataModule)


def check_data_class(subcommand: str, data: Mapping[str, Any]) -> None:
    """Refuse a ``--data`` class the command cannot use.

    ``fit``, ``validate``, ``test`` (and ``cv``, ``tune``, ``lr_find``, parsed as ``fit``) read the IDX files:
    :class:`mnist_lit.data.MNISTDataModule` or a subclass. ``predict`` also takes
    :class:`mnist_lit.pictures.PicturesDataModule`.

    Raises:
        SettingError: one line naming the class and the ones the command takes.
    """
    if issubclass(data_class(data), MNISTDataModule) or (subcommand == "predict" and uses_pictures(data)):
        return
    takes = "MNISTDataModule or PicturesDataModule" if subcommand == "predict" else "MNISTDataModule (the IDX files)"
    raise SettingError(f"--data {data.get('class_path')}: {subcommand} takes {takes}")


def split_keys_in_use(data: Mapping[str, Any]) -> set[str]:
    """The data settings that choose the validation images under ``data``'s split: ``num_folds``, ``fold``
    and ``split_seed`` for K-fold; else ``num_folds``, ``val_split``, ``split`` and, for ``split: random``
    only, ``split_seed`` (``tail`` takes the last images in file order, whatever the seed)."""
    if data.get("num_folds") is not None:
        return {"num_folds", "fold", "split_seed"}
    return {"num_folds", "val_split", "split"} | ({"split_seed"} if data.get("split") == "random" else set())


def check_eval(
    subcommand: str,
    ckpt_path: str | Path,
    checkpoint: Mapping[str, Any],
    data_config: Mapping[str, Any],
    pictures: bool,
) -> None:
    """Refuse data settings that contradict what the model was trained on, for ``validate``/``test``/``predict``.

    ``data_config`` holds the DataModule's arguments (:func:`mnist_lit.runs.data_settings`); ``pictures``: they
    are :class:`mnist_lit.pictures.PicturesDataModule`'s (``predict`` on your pictures).

    Raises:
        CheckpointError: another data set than the model's; ``validate`` with a split setting that
            selects other validation images than training's (:func:`split_keys_in_use`); pictures (read as
            digits) for a non-MNIST model.
    """
    dataset = model_hparams(dict(checkpoint)).get("dataset", "mnist")
    if pictures:
        if dataset != "mnist":
            raise CheckpointError(
                f"{ckpt_path}: a {dataset} model; PicturesDataModule reads pictures as digits, so it "
                "needs a checkpoint trained on mnist"
            )
        return
    if data_config.get("dataset") != dataset:
        raise CheckpointError(
            f"{ckpt_path}: a {dataset} model, but the data is {data_config.get('dataset')} "
            f"(data.dataset); use --data.dataset {dataset} or a checkpoint trained on "
            f"{data_config.get('dataset')}"
        )
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    if subcommand == "validate":
        for key in split_keys_in_use(trained) | split_keys_in_use(data_config):
            if key in trained and data_config.get(key) != trained[key]:
                raise CheckpointError(
                    f"validate: data.{key} {data_config.get(key)!r} contradicts the {trained[key]!r} "
                    f"{ckpt_path} was trained with, so validation would score training images; "
                    "drop the flag or the --config that sets it"
                )
