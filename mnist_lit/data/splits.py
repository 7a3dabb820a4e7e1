"""One split of a data set read and checked (:func:`load_split`), and the training file cut for validation:
the Keras holdout (:func:`split_indices`) or stratified K-fold (:func:`fold_indices`).

Reading a split takes three steps, one function each: :func:`split_files` finds its two files,
:func:`read_split` reads and checks them (IDX structure, counts, labels, official md5), :func:`load_split`
keeps the result per process. The cache stays because one process reads the same split several times:
``prepare_data``'s check and ``setup``'s read in one ``fit``, the test after it, every ``cv`` fold, and the
data identity saved with the checkpoints (:mod:`mnist_lit.data.identity`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_only

from mnist_lit.data.files import (
    NUM_CLASSES,
    OFFICIAL_COUNTS,
    RAW_FILES,
    check_official,
    find_raw_file,
    missing_files_message,
    raw_folder,
)
from mnist_lit.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, file_md5, read_idx_file
from mnist_lit.errors import DataError, IdxError

log = logging.getLogger(__name__)

#: Checked splits kept by :func:`load_split`, most recently used (a full-size train + test pair is 55 MB); 0: none.
SPLIT_CACHE_SIZE = 4
_split_cache: dict[tuple, CheckedSplit] = {}


@dataclass(frozen=True)
class CheckedSplit:
    """A split as :func:`read_split` read it.

    Attributes:
        images: uint8 (N, 1, 28, 28).
        labels: int64 (N,), values 0-9.
        official: both files hold the official count and matched the official md5.
        md5s: hex md5 of the images file and of the labels file, as stored and as read.
    """

    images: torch.Tensor
    labels: torch.Tensor
    official: bool
    md5s: tuple[str, str]


def split_files(data_dir: str | Path, stage: Literal["train", "test"], dataset: str = "mnist") -> tuple[Path, Path]:
    """The (images file, labels file) of ``stage`` under any of their names (:func:`mnist_lit.data.files.raw_file_names`).

    Raises:
        DataError: either is missing (:func:`mnist_lit.data.files.missing_files_message`).
    """
    folder = raw_folder(data_dir, dataset)
    image_path, label_path = (find_raw_file(folder, stem) for stem in RAW_FILES[stage])
    if image_path is None or label_path is None:
        raise DataError(missing_files_message(data_dir, dataset))
    return image_path, label_path


def read_split(image_path: Path, label_path: Path, stage: Literal["train", "test"], dataset: str) -> CheckedSplit:
    """Read and check a split's images and labels files.

    Each file is read in bounded memory by :func:`mnist_lit.data.idx.read_idx_file` (gzip or not, size, magic
    number, 28x28, length against header) and checked by :func:`mnist_lit.data.files.check_official` (official
    count -> official md5). The labels are read first and must be digits; the images file is refused before
    its items are inflated when its header announces another count than the labels'.

    Raises:
        DataError: a file is damaged, has the official count but a wrong md5, or image and label counts
            differ; one line naming the file and what to do.
    """
    image_stem, label_stem = RAW_FILES[stage]

    def same_count(count: int) -> None:
        if count != len(labels):
            raise DataError(
                f"{image_path} holds {count:,} images but {label_path.name} holds {len(labels):,} "
                "labels; the two files must come from the same set: replace the wrong one"
            )

    try:
        label_content = read_idx_file(label_path, IDX_LABELS_MAGIC)
        labels = label_content.tensor
        if len(labels) and int(labels.max()) >= NUM_CLASSES:
            raise DataError(
                f"{label_path}: label {int(labels.max())} is not a digit 0-9; replace it with the right labels file"
            )
        image_content = read_idx_file(image_path, IDX_IMAGES_MAGIC, check_count=same_count)
    except IdxError as err:
        raise DataError(str(err)) from None
    official = check_official(image_path, image_stem, dataset, image_content) & check_official(
        label_path, label_stem, dataset, label_content
    )
    md5s = (image_content.file_md5, label_content.file_md5)
    return CheckedSplit(image_content.tensor.unsqueeze(1), labels.long(), official, md5s)


def load_split(
    data_dir: str | Path, stage: Literal["train", "test"], dataset: str = "mnist", notice: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the IDX files, read and checked (:func:`read_split`) once per process while unchanged.

    A split whose files do not hold the official counts is used as it is, after an INFO notice of its counts
    (e.g. ``../shared/data/mnist-10k``: 10,000 training images instead of 60,000) unless ``notice`` is false.
    Checked splits are kept (the :data:`SPLIT_CACHE_SIZE` most recently used), keyed by the files' paths and
    the md5 of their bytes, so a file changed in between, even in place within the same clock tick, is read
    and checked again. ``SPLIT_CACHE_SIZE = 0`` keeps nothing.

    Returns:
        images: uint8 (N, 1, 28, 28); labels: int64 (N,), values 0-9; new tensors on every call
        (changing them in place changes no other caller's data).

    Raises:
        DataError: a file is missing or damaged, has the official count but a wrong md5, or
            image and label counts differ; one line naming the file and what to do.
    """
    image_path, label_path = split_files(data_dir, stage, dataset)
    try:
        md5s = tuple(file_md5(path) for path in (image_path, label_path))  # streamed: constant memory
    except OSError as err:
        raise DataError(
            f"{err.filename}: cannot read it ({err.strerror}); check the file and its permissions"
        ) from None
    where = (dataset, stage, str(image_path.resolve()), str(label_path.resolve()))
    split = _split_cache.pop(where + md5s, None) or read_split(image_path, label_path, stage, dataset)
    _split_cache[where + split.md5s] = split  # the bytes decoded, should the files have changed meanwhile
    while len(_split_cache) > SPLIT_CACHE_SIZE:
        _split_cache.pop(next(iter(_split_cache)))  # the least recently used
    if notice and not split.official and getattr(rank_zero_only, "rank", 0) == 0:
        log.info(
            f"Notice: {raw_folder(data_dir, dataset)} holds a non-official {dataset} {stage} set of {len(split.labels):,} "
            f"images and labels (official: {OFFICIAL_COUNTS[RAW_FILES[stage][0].split('-')[0]]:,}); checked "
            "for structure, not md5, and used as it is"
        )
    return split.images.clone(), split.labels.clone()


def check_holdout(n: int, val_split: float) -> int:
    """The number of validation images of a ``val_split`` holdout of ``n`` images, round(val_split * n).

    Raises:
        DataError: ``val_split`` outside (0, 1), or a holdout that leaves a part empty.
    """
    if not 0.0 < val_split < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
    val_size = round(val_split * n)
    if val_size == 0 or val_size == n:
        raise DataError(
            f"val_split={val_split} of {n} training images leaves an empty "
            f"{'validation' if val_size == 0 else 'training'} set; choose a value nearer 0.5"
        )
    return val_size


def check_folds(n: int, num_folds: int, fold: int) -> None:
    """Refuse a K-fold split that ``n`` images cannot give.

    Raises:
        DataError: ``num_folds`` below 2 or above ``n``, or ``fold`` outside 0..K-1.
    """
    if not 2 <= num_folds <= n:
        raise DataError(f"num_folds must be between 2 and the {n} training images, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise DataError(f"fold must be between 0 and num_folds-1={num_folds - 1}, got {fold}")


def split_indices(
    n: int, val_split: float, split: Literal["tail", "random"], split_seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation parts of ``n`` training images.

    ``val_size = round(val_split * n)``. ``"tail"`` holds out the last ``val_size`` images in
    file order, as Keras's ``validation_split`` does (42,000 / 18,000 on full MNIST).
    ``"random"`` permutes with a dedicated ``torch.Generator`` seeded by ``split_seed``, so the
    split is the same on every call and in every process, whatever the global RNG state.

    Returns:
        (train_idx, val_idx): int64 tensors, disjoint, together ``0..n-1``.

    Raises:
        DataError: ``val_split`` outside (0, 1), or a split that leaves a part empty.
    """
    val_size = check_holdout(n, val_split)
    if split == "tail":
        order = torch.arange(n)
    elif split == "random":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    else:
        raise DataError(f"split must be 'tail' or 'random', got {split!r}")
    return order[: n - val_size], order[n - val_size :]


def fold_indices(
    labels: torch.Tensor, num_folds: int, fold: int, split_seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation parts for fold ``fold`` of a stratified K-fold split.

    Each class's indices are shuffled by a dedicated ``torch.Generator`` seeded by ``split_seed``
    and the classes are laid end to end; position ``j`` of that order goes to fold ``j % num_folds``.
    So the K validation folds are disjoint, cover ``0..n-1``, differ in size by at most one image,
    and hold each class's count to within one image of ``count / K`` (stratified). The same
    arguments give the same folds in every process. (Own code rather than scikit-learn's
    ``StratifiedKFold``: a few lines of torch instead of a dependency on scikit-learn and SciPy.)

    Args:
        labels: int64 (N,), the training file's labels in file order.
        num_folds: K, at least 2 and at most N.
        fold: which fold is the validation part, 0 to K-1.
        split_seed: seed of the generator that shuffles within each class.

    Returns:
        (train_idx, val_idx): int64 tensors into ``labels``, each sorted ascending; disjoint,
        together ``0..N-1``.

    Raises:
        DataError: ``num_folds`` below 2 or above N, or ``fold`` outside 0..K-1.
    """
    n = len(labels)
    check_folds(n, num_folds, fold)
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.cat(
        [
            idx[torch.randperm(len(idx), generator=generator)]
            for idx in (torch.nonzero(labels == c).flatten() for c in range(NUM_CLASSES))
        ]
    )
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % num_folds
    return torch.nonzero(fold_of != fold).flatten(), torch.nonzero(fold_of == fold).flatten()
