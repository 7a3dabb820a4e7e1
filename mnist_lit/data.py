"""MNIST as a LightningDataModule: IDX files -> validated uint8 tensors -> split -> batches.

Images stay in memory as one ``uint8`` tensor of shape (N, 1, 28, 28) (47 MB for the
full 60,000-image training file); a batch is one tensor index and stays uint8 until the
model scales it (:func:`mnist_lit.model.scale_pixels`, the model's ``pixel_scale``), so a
batch copied to a GPU is 4x smaller than float32. There is no PIL conversion and no
per-sample Python work.
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import Literal

import torch
import torchvision
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from mnist_lit.errors import DataError, IdxError
from mnist_lit.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxContent, file_md5, read_idx_file, read_idx_stream
from mnist_lit.limits import DOWNLOAD_DEADLINE, DOWNLOAD_TIMEOUT

NUM_CLASSES = 10

#: torchvision class per data set: its download mirrors, md5 sums and folder name.
DATASETS = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}
#: The four IDX files of a data set (without ``.gz``; both forms are read).
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Items in each official file (MNIST and Fashion-MNIST alike); a file of another count is a
#: non-official set, used as it is after a notice. File sizes follow: 16 + N*784 bytes for
#: images, 8 + N bytes for labels (uncompressed), which :func:`read_idx` checks against the header.
OFFICIAL_COUNTS = {"train": 60_000, "t10k": 10_000}
#: md5 of the official *uncompressed* files (the ``.gz`` md5s are torchvision's ``resources``).
#: t10k values checked here against the official files; train values as published with the data
#: by many projects (e.g. TensorFlow's MNIST tutorials). Fashion-MNIST: none known, so an
#: uncompressed Fashion-MNIST file is checked for structure only.
OFFICIAL_RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    # Uncompressed md5s as listed by older torchvision releases (FashionMNIST.raw_data); Debian's
    # dataset-fashion-mnist recompresses the files, so only these identify its content.
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

log = logging.getLogger(__name__)


def read_idx(path: str | Path, expected_magic: int) -> torch.Tensor:
    """Read one IDX file (gzip-compressed or not) into a uint8 tensor, in bounded memory.

    Args:
        path: the file; gzip is recognised by its magic bytes (``1f 8b``), not by the name, so
            a gzip file without ``.gz`` and an uncompressed file named ``.gz`` both read.
        expected_magic: 2051 for images (N, 28, 28) or 2049 for labels (N,).

    Returns:
        uint8 tensor of shape (N, 28, 28) for images or (N,) for labels.

    Raises:
        DataError: damaged gzip data, wrong magic number, wrong image size, a file shorter or
            longer than its header says (e.g. a truncated download), or a header announcing more
            items than :data:`mnist_lit.limits.MAX_IDX_ITEMS` (see :mod:`mnist_lit.idx`).
    """
    try:
        return read_idx_file(path, expected_magic).tensor
    except IdxError as err:
        raise DataError(str(err)) from None


def decode_idx(path: Path, file_bytes: bytes, expected_magic: int) -> tuple[torch.Tensor, bytes]:
    """:func:`read_idx` on bytes already in memory (e.g. a download), named ``path`` in errors.

    Returns:
        (tensor, data): the uint8 tensor and the uncompressed IDX content (header and items).
    """
    try:
        content = read_idx_stream(io.BytesIO(file_bytes), path, expected_magic)
    except IdxError as err:
        raise DataError(str(err)) from None
    tensor = content.tensor
    dims = struct.pack(">II", *tensor.shape[1:]) if tensor.dim() == 3 else b""
    return tensor, struct.pack(">II", expected_magic, len(tensor)) + dims + tensor.numpy().tobytes()


def magic_for(name: str) -> int:
    """The IDX magic number a file of this name must have: 2051 for ``*-images-*``, else 2049."""
    return IDX_IMAGES_MAGIC if "-images-" in name else IDX_LABELS_MAGIC


def raw_folder(data_dir: str | Path, dataset: str = "mnist") -> Path:
    """The folder holding a data set's IDX files.

    torchvision's layout ``data_dir/MNIST/raw`` (``FashionMNIST`` for Fashion-MNIST), where
    downloads go; or ``data_dir`` itself when it already holds the training images and the
    torchvision folder does not exist (a flat layout such as Debian's
    ``/usr/share/datasets/fashion-mnist/``).
    """
    nested = Path(data_dir) / DATASETS[dataset].__name__ / "raw"
    flat = Path(data_dir)
    if not nested.is_dir() and find_raw_file(flat, RAW_FILES["train"][0]) is not None:
        return flat
    return nested


def raw_file_names(stem: str) -> tuple[str, ...]:
    """The names under which the file ``stem`` (e.g. ``train-images-idx3-ubyte``) is looked for, in order:
    ``stem``, ``stem.gz``, Kaggle's ``train-images.idx3-ubyte`` and its ``.gz``, and ``stem/stem`` (Kaggle's
    archive also holds each file in a folder of the same name)."""
    kaggle = stem.replace("-idx", ".idx")
    return stem, f"{stem}.gz", kaggle, f"{kaggle}.gz", f"{stem}/{stem}"


def find_raw_file(folder: Path, stem: str) -> Path | None:
    """The first of :func:`raw_file_names` that is a file in ``folder`` (uncompressed first), or None."""
    for name in raw_file_names(stem):
        if (folder / name).is_file():
            return folder / name
    return None


def missing_files_message(data_dir: str | Path, dataset: str = "mnist") -> str:
    """One line naming the four files, the folder they belong in, and the IDX-like files found instead."""
    if Path(data_dir).is_file():
        return f"data_dir {data_dir} is a file, not a folder; give the folder that holds (or will hold) the data"
    folder = raw_folder(data_dir, dataset)
    names = ", ".join(f"{stem}.gz" for pair in RAW_FILES.values() for stem in pair)
    found = sorted(
        {
            p.name
            for where in (folder, Path(data_dir))
            if where.is_dir()
            for p in where.iterdir()
            if "ubyte" in p.name or "idx" in p.name
        }
    )
    seen = f" (found only {', '.join(found[:8])}{', ...' if len(found) > 8 else ''})" if found else ""
    return (
        f"{dataset} data not found: put {names} (gzip or not; Kaggle's train-images.idx3-ubyte names work "
        f"too) in {folder}/{seen} or set --data.download true"
    )


def official_md5s(dataset: str, stem: str) -> tuple[str | None, str | None]:
    """(md5 of the official ``.gz`` file, md5 of the official uncompressed file) for ``stem``.

    The ``.gz`` md5 comes from torchvision's ``resources`` list; the uncompressed one from
    :data:`OFFICIAL_RAW_MD5` (``None`` where unknown).
    """
    gz = {name.removesuffix(".gz"): md5 for name, md5 in DATASETS[dataset].resources}.get(stem)
    return gz, OFFICIAL_RAW_MD5.get(dataset, {}).get(stem)


def check_official(path: Path, stem: str, dataset: str, content: IdxContent) -> bool:
    """Check a file against the official md5 when it holds the official number of items.

    The rule: a file named like an official one (``stem``) whose header holds the official count
    (60,000 for ``train-*``, 10,000 for ``t10k-*``) must be the official file: its md5 must equal
    the official ``.gz`` md5 (as downloaded) or the official uncompressed md5 (gunzipped or
    recompressed). A file with another count is a non-official set (a subset, your own data) and
    is not md5-checked; the caller prints a notice of its counts.

    Args:
        content: the file as read by :func:`mnist_lit.idx.read_idx_stream` (its tensor and both md5s).

    Returns:
        True if the file holds the official count and its md5 matches (or no md5 is known for its
        form), False for a non-official count.

    Raises:
        DataError: the official count but neither md5 matches (damaged or altered file).
    """
    count, compressed, file_md5, data_md5 = len(content.tensor), content.compressed, content.file_md5, content.data_md5
    if count != OFFICIAL_COUNTS[stem.split("-")[0]]:
        return False
    gz_md5, raw_md5 = official_md5s(dataset, stem)
    if raw_md5 is None and not compressed:
        return True  # uncompressed file and no official md5 known for that form: structure only
    if compressed and file_md5 == gz_md5:
        return True
    if data_md5 == raw_md5:
        return True
    for other in DATASETS.keys() - {dataset}:  # e.g. Fashion-MNIST's files read as MNIST: the flag is missing
        other_gz, other_raw = official_md5s(other, stem)
        if (compressed and file_md5 == other_gz) or data_md5 == other_raw:
            raise DataError(
                f"{path} is the official {other} {stem}, not {dataset}'s: add --data.dataset {other}, "
                f"or point --data.data_dir at the {dataset} files"
            )
    got, want = (file_md5, gz_md5) if compressed and raw_md5 is None else (data_md5, raw_md5)
    what = "compressed" if compressed and raw_md5 is None else "uncompressed"
    raise DataError(
        f"{path}: wrong md5 for the official {stem} ({what} md5 {got}, expected {want}) although it "
        f"holds the official {count:,} items; the file is damaged or altered: delete it and run with "
        "--data.download true, or copy the official file"
    )


def load_split(
    data_dir: str | Path, stage: Literal["train", "test"], dataset: str = "mnist", notice: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and check one split of the IDX files.

    Each file is read in bounded memory by :func:`mnist_lit.idx.read_idx_file` (gzip or not, size,
    magic number, 28x28, length against header; the images file only once its count matches the labels') and :func:`check_official` (official count -> official md5); then the two
    files must hold as many images as labels, and labels must be digits. A split whose files do
    not hold the official counts is used as it is, after an INFO notice of its counts (e.g.
    ``../shared/data/mnist-10k``: 10,000 training images instead of 60,000) unless ``notice`` is false.

    Checked splits are kept per process (the :data:`SPLIT_CACHE_SIZE` most recently used; 55 MB for
    a full-size train + test pair), keyed by the files' paths and the md5 of their bytes as read, so
    the reads of one ``fit`` (``prepare_data``, ``setup``, the test after it) decompress and check
    each file once: a repeated call on Fashion-MNIST's full-size training file takes 0.05 s instead
    of 0.36 s on 2 CPU cores, and a file changed in between, even in place within the same clock
    tick, is checked again. ``SPLIT_CACHE_SIZE = 0`` keeps nothing.

    Returns:
        images: uint8 (N, 1, 28, 28); labels: int64 (N,), values 0-9; new tensors on every call
        (changing them in place changes no other caller's data).

    Raises:
        DataError: a file is missing or damaged, has the official count but a wrong md5, or
            image and label counts differ; one line naming the file and what to do.
    """
    images, labels = _checked_split(data_dir, stage, dataset, notice)
    return images.clone(), labels.clone()


def _checked_split(
    data_dir: str | Path, stage: Literal["train", "test"], dataset: str, notice: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_split` without the copies: the cached tensors themselves, for callers that only read them."""
    folder = raw_folder(data_dir, dataset)
    image_stem, label_stem = RAW_FILES[stage]
    image_path, label_path = find_raw_file(folder, image_stem), find_raw_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(missing_files_message(data_dir, dataset))
    try:
        md5s = [file_md5(path) for path in (image_path, label_path)]  # streamed: constant memory
    except OSError as err:
        raise DataError(
            f"{err.filename}: cannot read it ({err.strerror}); check the file and its permissions"
        ) from None
    key = (dataset, stage, str(image_path.resolve()), str(label_path.resolve()), *md5s)
    entry = _split_cache.pop(key, None)
    if entry is None:
        entry, md5s = _read_split(image_path, label_path, stage, dataset)
        key = (*key[:4], *md5s)  # the bytes actually decoded, should the files have changed meanwhile
    _split_cache[key] = entry  # now the most recently used
    while len(_split_cache) > SPLIT_CACHE_SIZE:
        _split_cache.pop(next(iter(_split_cache)))  # the least recently used
    images, labels, official = entry
    if notice and not official and rank_zero_only.rank == 0:
        log.info(
            f"Notice: {folder} holds a non-official {dataset} {stage} set of {len(labels):,} images and "
            f"labels (official: {OFFICIAL_COUNTS[image_stem.split('-')[0]]:,}); checked for structure, "
            "not md5, and used as it is"
        )
    return images, labels


#: Checked splits kept by :func:`load_split`, most recently used (a full-size train + test pair is 55 MB); 0: none.
SPLIT_CACHE_SIZE = 4
_split_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, bool]] = {}


def _read_split(
    image_path: Path, label_path: Path, stage: Literal["train", "test"], dataset: str
) -> tuple[tuple[torch.Tensor, torch.Tensor, bool], list[str]]:
    """Read and check a split's images and labels files: ((images uint8 (N, 1, 28, 28), labels int64 (N,),
    whether both are the official files), [md5 of the images file, md5 of the labels file] as read).

    The labels are read first, so an images file whose header announces another count is refused
    before its items are inflated."""
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
    return (
        (image_content.tensor.unsqueeze(1), labels.long(), official),
        [image_content.file_md5, label_content.file_md5],
    )


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
    if not 0.0 < val_split < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
    val_size = round(val_split * n)
    if val_size == 0 or val_size == n:
        raise DataError(
            f"val_split={val_split} of {n} training images leaves an empty "
            f"{'validation' if val_size == 0 else 'training'} set; choose a value nearer 0.5"
        )
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
    if not 2 <= num_folds <= n:
        raise DataError(f"num_folds must be between 2 and the {n} training images, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise DataError(f"fold must be between 0 and num_folds-1={num_folds - 1}, got {fold}")
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


class MNISTDataModule(LightningDataModule):
    """MNIST (or Fashion-MNIST) with the Keras tutorial's split.

    Batches are ``(images, labels)``: images uint8 (B, 1, 28, 28), 0-255 (the model scales them),
    labels int64 (B,).

    Args:
        data_dir: root folder; files live in ``data_dir/MNIST/raw/`` as torchvision lays them out.
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (same IDX format, torchvision's mirrors).
        download: fetch missing files in :meth:`prepare_data` (see :mod:`mnist_lit.download`).
        mirrors: base URLs tried in order for each missing file; ``None``: torchvision's mirrors
            for ``dataset`` (``torchvision.datasets.MNIST.mirrors``).
        download_timeout: seconds allowed per request for connecting and for each read
            (:data:`mnist_lit.limits.DOWNLOAD_TIMEOUT`).
        download_deadline: seconds one ``prepare_data`` may spend downloading, all files and
            mirrors together (:data:`mnist_lit.limits.DOWNLOAD_DEADLINE`); raise it on a slow network.
        batch_size: images per optimizer step, all devices together (Keras tutorial: 128); on
            ``W`` processes each device gets ``batch_size / W`` (see :mod:`mnist_lit.distributed`).
        val_split: fraction of the training file held out for validation (tutorial: 0.3).
        split: ``"tail"`` (Keras: the last fraction in file order) or ``"random"``.
        split_seed: seed of the dedicated generator used by ``split="random"`` and by the folds.
        num_folds: K for K-fold validation; when set, fold ``fold`` of a stratified K-fold split
            of the training file (:func:`fold_indices`) is the validation part and ``val_split``
            and ``split`` are not used. ``None`` (default): the ``val_split`` holdout.
        fold: which of the ``num_folds`` folds is validated, 0 to K-1.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors.
        pin_memory: pin host memory for faster copies to a GPU (unused when ``data_on_device``).
        data_on_device: when the trainer runs on a GPU, keep the images and labels there (uint8:
            55 MB for all of MNIST), so batches are cut on the GPU and nothing is copied per batch.
        predict_path: pictures to predict instead of the test set: an image file, a folder (its
            images, sorted by name) or a glob (:func:`mnist_lit.images.list_images`). Each picture
            goes through :func:`mnist_lit.pictures.read_picture` (one digit or a whole number); predict
            batches are then :class:`mnist_lit.pictures.PictureFiles` batches and a file that fails or
            holds no digit gets an error row.
        predict_sheet: with ``predict_path``, also render a PNG sheet to this path: each picture,
            its 28x28 preprocessed version and the predicted digit (:mod:`mnist_lit.sheet`).
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
        predict_path: str | None = None,
        predict_sheet: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0.0 < val_split < 1.0:
            raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
        if num_workers < 0:
            raise DataError(f"num_workers must be 0 or more, got {num_workers}")
        if download_timeout <= 0:
            raise DataError(f"download_timeout must be a positive number of seconds, got {download_timeout}")
        if download_deadline <= 0:
            raise DataError(f"download_deadline must be a positive number of seconds, got {download_deadline}")
        if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
            raise DataError(
                f"K-fold needs num_folds >= 2 and fold in 0..num_folds-1, got num_folds={num_folds}, fold={fold}"
            )
        if predict_sheet is not None and (predict_path is None or not predict_sheet.lower().endswith(".png")):
            raise DataError(
                f"predict_sheet={predict_sheet!r}: the sheet is a .png file and needs predict_path "
                "(the pictures to predict)"
            )
        self.save_hyperparameters()
        self.data_train = self.data_val = self.data_test = self.data_predict = None
        self.train_idx = self.val_idx = None
        self._train_identity: dict | None = None

    def state_dict(self) -> dict:
        """Saved in every checkpoint: which training data this is, so that a resume on other data is
        refused (:mod:`mnist_lit.data_identity`); computed once (a SHA-256 of the decoded training split)."""
        if self._train_identity is None:
            from mnist_lit.data_identity import train_data_identity  # it imports this module

            self._train_identity = train_data_identity(self.hparams.data_dir, self.hparams.dataset)
        return {"train_data": self._train_identity}

    def prepare_data(self) -> None:
        """Download the missing files, if any, then check all four. Runs on one process per node.

        Only files found under none of their names (:func:`raw_file_names`) are fetched, as ``NAME.gz``
        from ``mirrors`` (torchvision's, https first, by default), read up to their official size,
        checked against torchvision's md5 and the IDX structure before they get their name, all
        within ``download_deadline`` seconds (:func:`mnist_lit.download.download_files`). Then both
        splits are read once with :func:`load_split`, so a bad test file stops ``fit`` before
        training, not after it; a non-official set gets its notice here.

        Raises:
            DataError: files missing and ``download`` is false, no mirror delivered them
                (:class:`mnist_lit.download.DownloadError`; the message gives each mirror's reason
                and the offline command), or a file is damaged (see :func:`load_split`).
        """
        from mnist_lit.download import OFFICIAL_SIZES, download_files

        if self.hparams.get("predict_path") is not None and self.trainer is not None and self.trainer.predicting:
            return  # predicting on pictures needs no MNIST files
        folder = raw_folder(self.hparams.data_dir, self.hparams.dataset)
        missing = [stem for pair in RAW_FILES.values() for stem in pair if find_raw_file(folder, stem) is None]
        if missing and not self.hparams.download:
            raise DataError(missing_files_message(self.hparams.data_dir, self.hparams.dataset))
        if missing:
            dataset_cls = DATASETS[self.hparams.dataset]
            md5s = dict(dataset_cls.resources)
            files = [(f"{stem}.gz", md5s[f"{stem}.gz"]) for stem in missing]
            all_names = ", ".join(f"{stem}.gz" for pair in RAW_FILES.values() for stem in pair)
            # https first: the same files, but nobody on the way can read or swap them
            mirrors = (
                sorted(dataset_cls.mirrors, key=lambda url: not url.startswith("https://"))
                if self.hparams.mirrors is None
                else self.hparams.mirrors
            )
            data_dir = self.hparams.data_dir
            download_files(
                folder,
                files,
                mirrors,
                timeout=self.hparams.download_timeout,
                verify=lambda data, name: decode_idx(Path(name), data, magic_for(name)),
                sizes=OFFICIAL_SIZES[self.hparams.dataset],
                deadline=self.hparams.get("download_deadline", DOWNLOAD_DEADLINE),
                offline_hint=f"To use files you have, put {all_names} (gzip or not) in {folder}/ "
                f"and run with --data.data_dir {data_dir} --data.download false",
            )
        for stage in RAW_FILES:  # all four files checked before any training, the test files too
            labels = _checked_split(self.hparams.data_dir, stage, self.hparams.dataset, notice=True)[1]
            if stage == "train":  # and the split, before any logger or callback writes into a run folder
                self._split(labels)

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
        predict_images = self.hparams.get("predict_path") is not None
        if self.data_test is None and (stage in (None, "test") or (stage == "predict" and not predict_images)):
            self.data_test = InMemoryDataset(
                *load_split(self.hparams.data_dir, "test", self.hparams.dataset, notice=False)
            )
        if self.data_predict is None and stage in (None, "predict"):
            if predict_images:  # imported here: mnist_lit.images imports this module
                from mnist_lit.images import list_images
                from mnist_lit.pictures import PictureFiles

                self.data_predict = PictureFiles(list_images(self.hparams.predict_path))
            else:
                self.data_predict = self.data_test

    def _loader(self, dataset: InMemoryDataset, shuffle: bool) -> DataLoader:
        # Several processes (DDP): batch_size is global; evaluation shards are never padded.
        # Imported here because mnist_lit.distributed imports DataError from this module.
        from mnist_lit.distributed import eval_sampler, per_device_batch_size, world_size_of

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
