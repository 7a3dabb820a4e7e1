"""MNIST as a LightningDataModule: IDX files -> checked uint8 tensors -> split -> batches.

Images stay in memory as one ``uint8`` tensor of shape (N, 1, 28, 28) (47 MB for the
full 60,000-image training file); a batch is one tensor index and stays uint8 until the
model scales it (:func:`mnist_lit.model.scale_pixels`, the model's ``pixel_scale``), so a
batch copied to a GPU is 4x smaller than float32. There is no PIL conversion and no
per-sample Python work.

``prepare_data`` (one process per node) downloads what is missing and checks all four files and the split
before anything is written; ``setup`` (every process) reads the files it needs through
:func:`mnist_lit.data.splits.load_split`, which in the process that checked them hands back what it read.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from mnist_lit.data.download import download_missing
from mnist_lit.data.files import missing_files_message, missing_stems
from mnist_lit.data.identity import train_data_identity
from mnist_lit.data.sharding import eval_sampler, per_device_batch_size, world_size_of
from mnist_lit.data.splits import check_folds, check_holdout, fold_indices, load_split, split_indices
from mnist_lit.errors import DataError
from mnist_lit.hparams import TypedHParams, refuse_nulls
from mnist_lit.limits import (
    DOWNLOAD_DEADLINE,
    DOWNLOAD_TIMEOUT,
    MAX_BATCH_SIZE,
    WORKERS_PER_CPU,
    max_num_workers,
    usable_cpus,
)


class InMemoryDataset(Dataset):
    """Images and labels held as two tensors; a whole batch is fetched by one indexing op.

    Args:
        images: uint8 (N, 1, 28, 28).
        labels: int64 (N,).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, device=self.labels.device)
        return self.images[idx], self.labels[idx]

    def to_(self, device: torch.device) -> InMemoryDataset:
        """Move both tensors to ``device`` in place (a no-op when they are there); returns self."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self


def collate_batch(batch):
    """DataLoader ``collate_fn`` for :class:`InMemoryDataset`: the batch is already stacked."""
    return batch


def check_loader_bounds(batch_size: int, num_workers: int) -> None:
    """Refuse a ``num_workers`` below 0, or a ``batch_size`` or ``num_workers`` above its bound in
    :mod:`mnist_lit.limits` (both DataModules; each checks ``batch_size`` below 1 itself, with its other settings).

    Raises:
        DataError: ``num_workers`` below 0, ``batch_size`` above :data:`~mnist_lit.limits.MAX_BATCH_SIZE`, or
            ``num_workers`` above :func:`~mnist_lit.limits.max_num_workers` (one line naming the flag, the value and
            the bound's reason).
    """
    if num_workers < 0:
        raise DataError(f"num_workers must be 0 or more, got {num_workers}")
    if batch_size > MAX_BATCH_SIZE:
        raise DataError(
            f"--data.batch_size {batch_size} is more than {MAX_BATCH_SIZE:,} (2**20), more images than any data set "
            f"here holds (all of MNIST: 70,000); give 1 to {MAX_BATCH_SIZE:,}"
        )
    bound = max_num_workers()
    if num_workers > bound:
        raise DataError(
            f"--data.num_workers {num_workers} is more than {bound}, {WORKERS_PER_CPU} worker processes for each of "
            f"the {usable_cpus()} CPUs this process may use (each worker is a process with memory of its own); "
            f"give 0 to {bound}"
        )


class MNISTDataModule(TypedHParams, LightningDataModule):
    """MNIST (or Fashion-MNIST) with the Keras tutorial's split.

    Batches are ``(images, labels)``: images uint8 (B, 1, 28, 28), 0-255 (the model scales them),
    labels int64 (B,).

    Args:
        data_dir: root folder; files live in ``data_dir/MNIST/raw/`` as torchvision lays them out.
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (same IDX format, torchvision's mirrors).
        download: fetch missing files in :meth:`prepare_data` (see :mod:`mnist_lit.data.download`).
        mirrors: base URLs tried in order for each missing file; ``None``: torchvision's mirrors
            for ``dataset`` (``torchvision.datasets.MNIST.mirrors``).
        download_timeout: seconds allowed per request for connecting and for each read
            (:data:`mnist_lit.limits.DOWNLOAD_TIMEOUT`).
        download_deadline: seconds one ``prepare_data`` may spend downloading, all files and
            mirrors together (:data:`mnist_lit.limits.DOWNLOAD_DEADLINE`); raise it on a slow network.
        batch_size: images per optimizer step, all devices together (Keras tutorial: 128); on
            ``W`` processes each device gets ``batch_size / W`` (see :mod:`mnist_lit.data.sharding`); at most
            :data:`mnist_lit.limits.MAX_BATCH_SIZE`.
        val_split: fraction of the training file held out for validation (tutorial: 0.3).
        split: ``"tail"`` (Keras: the last fraction in file order) or ``"random"``.
        split_seed: seed of the dedicated generator used by ``split="random"`` and by the folds.
        num_folds: K for K-fold validation; when set, fold ``fold`` of a stratified K-fold split
            of the training file (:func:`mnist_lit.data.splits.fold_indices`) is the validation part and ``val_split``
            and ``split`` are not used. ``None`` (default): the ``val_split`` holdout.
        fold: which of the ``num_folds`` folds is validated, 0 to K-1.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors. At most
            :func:`mnist_lit.limits.max_num_workers` (4 per CPU this process may use).
        pin_memory: pin host memory for faster copies to a GPU (unused when ``data_on_device``).
        data_on_device: when the trainer runs on a GPU, keep the images and labels there (uint8:
            55 MB for all of MNIST), so batches are cut on the GPU and nothing is copied per batch.

    ``predict`` predicts the test set; your own pictures are another DataModule,
    :class:`mnist_lit.pictures.PicturesDataModule` (``--data PicturesDataModule``).
    """

    def __init__(
        self,
        data_dir: str = "data/",
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        download: bool = True,
        mirrors: list[str] | None = None,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        download_deadline: float = DOWNLOAD_DEADLINE,
        batch_size: int = 128,
        val_split: float = 0.3,
        split: Literal["tail", "random"] = "tail",
        split_seed: int = 42,
        num_folds: int | None = None,
        fold: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        data_on_device: bool = True,
    ) -> None:
        refuse_nulls(MNISTDataModule, locals(), "data")
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0.0 < val_split < 1.0:
            raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
        check_loader_bounds(batch_size, num_workers)
        if download_timeout <= 0:
            raise DataError(f"download_timeout must be a positive number of seconds, got {download_timeout}")
        if download_deadline <= 0:
            raise DataError(f"download_deadline must be a positive number of seconds, got {download_deadline}")
        if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
            raise DataError(
                f"K-fold needs num_folds >= 2 and fold in 0..num_folds-1, got num_folds={num_folds}, fold={fold}"
            )
        self.save_hyperparameters()
        self.data_train: InMemoryDataset | None = None
        self.data_val: InMemoryDataset | None = None
        self.data_test: InMemoryDataset | None = None
        self.data_predict: InMemoryDataset | None = None  # the test set
        self.train_idx: torch.Tensor | None = None
        self.val_idx: torch.Tensor | None = None
        self._train_identity: dict | None = None

    def state_dict(self) -> dict:
        """Saved in every checkpoint: which training data this is, so that a resume on other data is
        refused (:mod:`mnist_lit.data.identity`); computed once (a SHA-256 of the decoded training split)."""
        if self._train_identity is None:
            self._train_identity = train_data_identity(self.hparams.data_dir, self.hparams.dataset)
        return {"train_data": self._train_identity}

    def prepare_data(self) -> None:
        """Download the missing files, if any, then check all four and the split. Runs on one process per node.

        Only files found under none of their names are fetched (:func:`mnist_lit.data.download.download_missing`:
        ``mirrors``, bounded by ``download_timeout`` and ``download_deadline``, verified before they get their
        name). Then both splits are read and checked with :func:`mnist_lit.data.splits.load_split`, so a bad
        test file stops ``fit`` before training, not after it, and a non-official set gets its notice here;
        and the split must fit the training file, before any logger or callback writes into a run folder.

        Raises:
            DataError: files missing and ``download`` is false, no mirror delivered them
                (:class:`mnist_lit.errors.DownloadError`; the message gives each mirror's reason
                and the offline command), a file is damaged (see :func:`mnist_lit.data.splits.load_split`),
                or the split leaves a part empty.
        """
        data_dir, dataset = self.hparams.data_dir, self.hparams.dataset
        if not self.hparams.download and missing_stems(data_dir, dataset):
            raise DataError(missing_files_message(data_dir, dataset))
        if self.hparams.download:
            download_missing(
                data_dir,
                dataset,
                self.hparams.mirrors,
                timeout=self.hparams.download_timeout,
                deadline=self.hparams.get("download_deadline", DOWNLOAD_DEADLINE),
            )
        self._check_split(len(load_split(data_dir, "train", dataset, notice=True)[1]))
        load_split(data_dir, "test", dataset, notice=True)  # checked before any training, not after it

    def _check_split(self, count: int) -> None:
        """Refuse a ``val_split`` holdout or a K-fold split that ``count`` training images cannot give."""
        if self.hparams.num_folds is None:
            check_holdout(count, self.hparams.val_split)
        else:
            check_folds(count, self.hparams.num_folds, self.hparams.fold)

    def _split(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(train_idx, val_idx) into the training file: the ``val_split`` holdout or fold ``fold`` of K."""
        if self.hparams.num_folds is None:
            return split_indices(len(labels), self.hparams.val_split, self.hparams.split, self.hparams.split_seed)
        return fold_indices(labels, self.hparams.num_folds, self.hparams.fold, self.hparams.split_seed)

    def setup(self, stage: str | None = None) -> None:
        """Read the files into memory and split them; reads only, same result on every call and rank."""
        if self.data_train is None and stage in (None, "fit", "validate"):
            images, labels = load_split(self.hparams.data_dir, "train", self.hparams.dataset, notice=False)
            train_idx, val_idx = self._split(labels)
            self.train_idx, self.val_idx = train_idx, val_idx  # int64 indices into the training file
            self.data_train = InMemoryDataset(images[train_idx], labels[train_idx])
            self.data_val = InMemoryDataset(images[val_idx], labels[val_idx])
        if self.data_test is None and stage in (None, "test", "predict"):
            self.data_test = InMemoryDataset(
                *load_split(self.hparams.data_dir, "test", self.hparams.dataset, notice=False)
            )
        self.data_predict = self.data_test

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:  # Lightning calls setup(stage) first; a hand-driven DataModule may not
            raise RuntimeError("call setup() with this stage before asking for its dataloader")
        # Several processes (DDP): batch_size is global; evaluation shards are never padded.
        batch_size = per_device_batch_size(self.hparams.batch_size, world_size_of(self.trainer), training=shuffle)
        sampler = None if shuffle else eval_sampler(dataset, self.trainer)
        device = self._gpu_device()
        if device is not None and isinstance(dataset, InMemoryDataset):  # batches are cut on the GPU
            return DataLoader(
                dataset.to_(device), batch_size=batch_size, shuffle=shuffle, sampler=sampler, collate_fn=collate_batch
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
            collate_fn=collate_batch,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _gpu_device(self) -> torch.device | None:
        """The trainer's CUDA device when ``data_on_device`` is on, else None (CPU runs keep host tensors)."""
        if not self.hparams.get("data_on_device", True) or self.trainer is None:
            return None
        device = self.trainer.strategy.root_device
        return device if device.type == "cuda" else None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_predict, shuffle=False)
