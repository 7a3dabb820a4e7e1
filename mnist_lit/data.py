"""MNIST as a LightningDataModule: IDX files -> validated uint8 tensors -> split -> batches.

Images stay in memory as one ``uint8`` tensor of shape (N, 1, 28, 28) (47 MB for the
full 60,000-image training file); a batch is one tensor index, and pixels are scaled
to float32 per batch, after the batch reached its device. There is no PIL conversion
and no per-sample Python work.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import torch
import torchvision
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

IDX_IMAGES_MAGIC = 2051  # IDX header: 0x00000803 = unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # IDX header: 0x00000801 = unsigned byte, 1 dimension
IMAGE_SIDE = 28  # pixels; MNIST and Fashion-MNIST are 28x28
NUM_CLASSES = 10

#: torchvision class per data set: its download mirrors, md5 sums and folder name.
DATASETS = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}
#: The four IDX files of a data set (without ``.gz``; both forms are read).
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

PixelScale = Literal["unit", "raw"]


class DataError(ValueError):
    """A data file or data argument is unusable; the message is one line that says what to do."""


def scale_pixels(images: torch.Tensor, pixel_scale: PixelScale = "unit") -> torch.Tensor:
    """Turn uint8 pixels into the network's float32 input. The only place pixels are scaled.

    Args:
        images: uint8 tensor of any shape, usually (B, 1, 28, 28), values 0-255.
        pixel_scale: ``"unit"`` divides by 255 (float32 in [0, 1], the default);
            ``"raw"`` keeps 0-255 as float32, exactly what the Keras tutorial feeds.

    Returns:
        float32 tensor of the same shape and device.

    Raises:
        DataError: if ``images`` is not uint8 or ``pixel_scale`` is unknown.
    """
    if images.dtype != torch.uint8:
        raise DataError(f"scale_pixels expects uint8 pixels, got {images.dtype}; pass the raw 0-255 image tensor")
    if pixel_scale == "unit":
        return images.float().div_(255.0)
    if pixel_scale == "raw":
        return images.float()
    raise DataError(f"pixel_scale must be 'unit' or 'raw', got {pixel_scale!r}")


def read_idx(path: str | Path, expected_magic: int) -> torch.Tensor:
    """Read one IDX file (gzip-compressed or not) into a uint8 tensor.

    Args:
        path: the file; gzip is recognised by its magic bytes, not by the name.
        expected_magic: 2051 for images (N, 28, 28) or 2049 for labels (N,).

    Returns:
        uint8 tensor of shape (N, 28, 28) for images or (N,) for labels.

    Raises:
        DataError: wrong magic number, wrong image size, or a file shorter or longer
            than its header says (e.g. a truncated download).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: damaged gzip data ({err}); delete it and download it again") from None
    if len(raw) < 8:
        raise DataError(f"{path}: only {len(raw)} bytes, not an IDX file; delete it and download it again")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(f"{path}: IDX magic number {magic}, expected {expected_magic} for {kind}; "
                        "is this the right file?")
    shape: tuple[int, ...] = (count,)
    offset = 8
    if magic == IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise DataError(f"{path}: images are {rows}x{cols} pixels, expected 28x28")
        shape, offset = (count, rows, cols), 16
    expected = offset + count * (IMAGE_SIDE * IMAGE_SIDE if magic == IDX_IMAGES_MAGIC else 1)
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes but its header promises {expected} ({count} items); "
                        "the file is truncated or damaged, delete it and download it again")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


def raw_folder(data_dir: str | Path, dataset: str = "mnist") -> Path:
    """The folder torchvision uses for a data set's IDX files: ``data_dir/MNIST/raw``."""
    return Path(data_dir) / DATASETS[dataset].__name__ / "raw"


def find_raw_file(folder: Path, stem: str) -> Path | None:
    """Return ``folder/stem`` or ``folder/stem.gz``, whichever exists (uncompressed first)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files_message(data_dir: str | Path, dataset: str = "mnist") -> str:
    """One line naming the four files and the folder they belong in."""
    names = ", ".join(f"{stem}.gz" for pair in RAW_FILES.values() for stem in pair)
    return (f"{dataset} data not found: put {names} in {raw_folder(data_dir, dataset)}/ "
            "or set --data.download true")


def load_split(data_dir: str | Path, stage: Literal["train", "test"], dataset: str = "mnist"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and check one split of the IDX files.

    Returns:
        images: uint8 (N, 1, 28, 28); labels: int64 (N,), values 0-9.

    Raises:
        DataError: a file is missing or damaged, or image and label counts differ.
    """
    folder = raw_folder(data_dir, dataset)
    image_stem, label_stem = RAW_FILES[stage]
    image_path, label_path = find_raw_file(folder, image_stem), find_raw_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(missing_files_message(data_dir, dataset))
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {stage} images but {len(labels)} labels; "
                        "the two files must come from the same set")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{label_path}: label {int(labels.max())} is not a digit 0-9")
    return images.unsqueeze(1), labels.long()


def split_indices(n: int, val_split: float, split: Literal["tail", "random"], split_seed: int = 42
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
    if not 0.0 < val_split < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
    val_size = round(val_split * n)
    if val_size == 0 or val_size == n:
        raise DataError(f"val_split={val_split} of {n} training images leaves an empty "
                        f"{'validation' if val_size == 0 else 'training'} set; choose a value nearer 0.5")
    if split == "tail":
        order = torch.arange(n)
    elif split == "random":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    else:
        raise DataError(f"split must be 'tail' or 'random', got {split!r}")
    return order[: n - val_size], order[n - val_size:]


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
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


def collate_batch(batch):
    """DataLoader ``collate_fn`` for :class:`InMemoryDataset`: the batch is already stacked."""
    return batch


class MNISTDataModule(LightningDataModule):
    """MNIST (or Fashion-MNIST) with the Keras tutorial's split.

    Batches are ``(images, labels)``: images float32 (B, 1, 28, 28) scaled by
    :func:`scale_pixels` after the transfer to the device, labels int64 (B,).

    Args:
        data_dir: root folder; files live in ``data_dir/MNIST/raw/`` as torchvision lays them out.
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (same IDX format, torchvision's mirrors).
        download: fetch missing files in :meth:`prepare_data` through torchvision.
        batch_size: images per optimizer step, all devices together (Keras tutorial: 128); on
            ``W`` processes each device gets ``batch_size / W`` (see :mod:`mnist_lit.distributed`).
        val_split: fraction of the training file held out for validation (tutorial: 0.3).
        split: ``"tail"`` (Keras: the last fraction in file order) or ``"random"``.
        split_seed: seed of the dedicated generator used by ``split="random"``.
        pixel_scale: ``"unit"`` (float32 in [0, 1], default) or ``"raw"`` (0-255, as the tutorial).
        num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors.
        pin_memory: pin host memory for faster copies to a GPU.
    """

    def __init__(
        self,
        data_dir: str = "data/",
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        download: bool = True,
        batch_size: int = 128,
        val_split: float = 0.3,
        split: Literal["tail", "random"] = "tail",
        split_seed: int = 42,
        pixel_scale: PixelScale = "unit",
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0.0 < val_split < 1.0:
            raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
        if num_workers < 0:
            raise DataError(f"num_workers must be 0 or more, got {num_workers}")
        self.save_hyperparameters()
        self.data_train = self.data_val = self.data_test = self.data_predict = None

    def _files_present(self) -> bool:
        folder = raw_folder(self.hparams.data_dir, self.hparams.dataset)
        return all(find_raw_file(folder, stem) for pair in RAW_FILES.values() for stem in pair)

    def prepare_data(self) -> None:
        """Download missing files through torchvision (mirrors, md5 checks). Runs on one process per node."""
        if self._files_present():
            return
        if not self.hparams.download:
            raise DataError(missing_files_message(self.hparams.data_dir, self.hparams.dataset))
        dataset_cls = DATASETS[self.hparams.dataset]
        for train in (True, False):
            dataset_cls(self.hparams.data_dir, train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Read the files into memory and split them; reads only, same result on every call and rank."""
        if self.data_train is None and stage in (None, "fit", "validate"):
            images, labels = load_split(self.hparams.data_dir, "train", self.hparams.dataset)
            train_idx, val_idx = split_indices(len(labels), self.hparams.val_split, self.hparams.split,
                                               self.hparams.split_seed)
            self.data_train = InMemoryDataset(images[train_idx], labels[train_idx])
            self.data_val = InMemoryDataset(images[val_idx], labels[val_idx])
        if self.data_test is None and stage in (None, "test", "predict"):
            self.data_test = InMemoryDataset(*load_split(self.hparams.data_dir, "test", self.hparams.dataset))
        if self.data_predict is None and stage in (None, "predict"):
            self.data_predict = self.data_test

    def _loader(self, dataset: InMemoryDataset, shuffle: bool) -> DataLoader:
        # Several processes (DDP): batch_size is global; evaluation shards are never padded.
        # Imported here because mnist_lit.distributed imports DataError from this module.
        from mnist_lit.distributed import eval_sampler, per_device_batch_size, world_size_of

        batch_size = per_device_batch_size(self.hparams.batch_size, world_size_of(self.trainer), training=shuffle)
        sampler = None if shuffle else eval_sampler(dataset, self.trainer)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=self.hparams.num_workers, pin_memory=self.hparams.pin_memory,
                          collate_fn=collate_batch, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_predict, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Scale uint8 pixels to float32 on the device (4x less data to copy than float32)."""
        if torch.is_tensor(batch):  # a bare image tensor, e.g. the model's example_input_array
            return scale_pixels(batch, self.hparams.pixel_scale) if batch.dtype == torch.uint8 else batch
        images, *rest = batch
        if images.dtype == torch.uint8:
            images = scale_pixels(images, self.hparams.pixel_scale)
        return (images, *rest)
