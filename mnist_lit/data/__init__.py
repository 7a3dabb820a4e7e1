"""The data room: IDX files -> checked uint8 tensors -> split or folds -> uint8 batches (docs/architecture.md).

Modules, lowest first: :mod:`~mnist_lit.data.idx` (the IDX decoder), :mod:`~mnist_lit.data.files` (file names,
folders, official md5s), :mod:`~mnist_lit.data.download` (bounded, verified downloads),
:mod:`~mnist_lit.data.splits` (a split read and checked; holdout and K-fold indices),
:mod:`~mnist_lit.data.identity` (which training data a checkpoint learned from),
:mod:`~mnist_lit.data.sharding` (batch size and evaluation shards over DDP ranks) and
:mod:`~mnist_lit.data.datamodule` (:class:`MNISTDataModule`). The names people use are re-exported here, so
``mnist_lit.data.MNISTDataModule`` (configs, checkpoints' saved class paths) keeps working.
"""

from mnist_lit.data.datamodule import InMemoryDataset, MNISTDataModule, collate_batch
from mnist_lit.data.files import DATASETS, NUM_CLASSES, OFFICIAL_COUNTS, RAW_FILES, find_raw_file, raw_folder
from mnist_lit.data.idx import IMAGE_SIDE, decode_idx, magic_for, read_idx
from mnist_lit.data.splits import fold_indices, load_split, split_indices
from mnist_lit.errors import DataError

__all__ = [
    "DATASETS",
    "IMAGE_SIDE",
    "NUM_CLASSES",
    "OFFICIAL_COUNTS",
    "RAW_FILES",
    "DataError",
    "InMemoryDataset",
    "MNISTDataModule",
    "collate_batch",
    "decode_idx",
    "find_raw_file",
    "fold_indices",
    "load_split",
    "magic_for",
    "raw_folder",
    "read_idx",
    "split_indices",
]
