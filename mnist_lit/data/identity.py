"""Which training data a run learned from, so that resuming it on other data is refused.

``data_dir`` may change when a run is resumed (:data:`mnist_lit.runs.RESUMABLE_CHANGES`): the same files
may have moved, been decompressed or renamed the Kaggle way. What may not change is the data itself.
:meth:`mnist_lit.data.datamodule.MNISTDataModule.state_dict` saves :func:`train_data_identity` in every checkpoint
(Lightning stores a datamodule's ``state_dict`` under its class name, ``MNISTDataModule``);
:func:`check_same_data` compares it with the data a resumed ``fit`` would read, before anything is
written. The identity is a SHA-256 of the decoded images and labels, not of the files, so the same data
in another form (gzip or not) is the same data. Checkpoints from before this record carry none and are
not checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_lit.data.files import OFFICIAL_COUNTS, RAW_FILES, find_raw_file, missing_files_message, raw_folder
from mnist_lit.data.splits import load_split
from mnist_lit.errors import CheckpointError, DataError

#: Where a checkpoint keeps the datamodule's ``state_dict`` (``MNISTDataModule.__qualname__``).
STATE_KEY = "MNISTDataModule"


def train_data_identity(data_dir: str | Path, dataset: str) -> dict[str, Any]:
    """The identity of the training split in ``data_dir``.

    Returns:
        ``{"dataset", "data_dir", "train_images" (int), "official" (bool: the official 60,000, md5-checked
        by :func:`mnist_lit.data.splits.load_split`), "sha256" (hex of the uint8 images (N, 1, 28, 28) then the
        int64 labels (N,), as decoded)}``.

    Raises:
        DataError: the files are missing or damaged (see :func:`mnist_lit.data.splits.load_split`).
    """
    images, labels = load_split(data_dir, "train", dataset, notice=False)
    digest = hashlib.sha256(images.contiguous().numpy().data)
    digest.update(labels.contiguous().numpy().data)
    return {
        "dataset": dataset,
        "data_dir": str(data_dir),
        "train_images": len(labels),
        "official": len(labels) == OFFICIAL_COUNTS["train"],
        "sha256": digest.hexdigest(),
    }


def check_same_data(
    ckpt_path: str | Path, checkpoint: Mapping[str, Any], data_config: Mapping[str, Any], command: str = "fit"
) -> None:
    """Refuse ``fit --ckpt_path CKPT`` (resume) or ``validate --ckpt_path CKPT`` whose ``data_dir`` holds other
    training data than the run's: a resume would continue on other data, and validate would score images the
    run trained on (its validation images are a part of the training file).

    Reads the training files of ``data_config`` (``data_dir``, ``dataset``, ``download``). Missing files
    are fine when ``download`` is on and the run trained on the official set (a download brings exactly
    that, md5-checked).

    Raises:
        CheckpointError: other training data, or missing files that a download could not replace by the
            run's (a non-official set); one line naming both.
        DataError: missing files with ``download`` off, damaged files.
    """
    recorded = (checkpoint.get(STATE_KEY) or {}).get("train_data")
    if not recorded:
        return  # a checkpoint from before the record: nothing to compare
    data_dir, dataset = data_config["data_dir"], data_config["dataset"]
    verb = "resume" if command == "fit" else command
    advice = (
        f"or start a new run from these weights with --finetune_from {ckpt_path}"
        if command == "fit"
        else "or use test, which evaluates on any test set"
    )
    trained = (
        f"cannot {verb} {ckpt_path}: its run was trained on {recorded['train_images']:,} "
        f"{recorded['dataset']} training images from {recorded['data_dir']}"
    )
    folder = raw_folder(data_dir, dataset)
    if any(find_raw_file(folder, stem) is None for stem in RAW_FILES["train"]):
        if not data_config.get("download"):
            raise DataError(missing_files_message(data_dir, dataset))
        if recorded["official"]:
            return  # the download brings the official files, which are the run's
        raise CheckpointError(
            f"{trained}, not the official set; {data_dir} holds no {dataset} training files and a "
            f"download would bring the official {OFFICIAL_COUNTS['train']:,}; point --data.data_dir "
            "at the run's data"
        )
    current = train_data_identity(data_dir, dataset)
    if current["sha256"] != recorded["sha256"] or current["dataset"] != recorded["dataset"]:
        raise CheckpointError(
            f"{trained} (sha256 {recorded['sha256'][:12]}), but {data_dir} holds "
            f"{current['train_images']:,} other training images (sha256 {current['sha256'][:12]}); "
            f"point --data.data_dir at the run's data (it may move, not change), {advice}"
        )
