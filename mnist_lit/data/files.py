"""The raw files of a data set: their names and folder, the official md5 sums, and the missing-files message.

MNIST and Fashion-MNIST ship as four IDX files (LeCun et al., http://yann.lecun.com/exdb/mnist/; Xiao et al.,
https://github.com/zalandoresearch/fashion-mnist), gzip-compressed; torchvision's dataset classes give their
mirrors, the ``.gz`` md5 sums and the folder name. A file is found under several names (:func:`raw_file_names`),
and a file holding the official number of items must be the official file (:func:`check_official`).
"""

from __future__ import annotations

from pathlib import Path

import torchvision

from mnist_lit.data.idx import IdxContent
from mnist_lit.errors import DataError

#: Classes of every data set here (digits 0-9; Fashion-MNIST's ten kinds of clothing).
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
#: images, 8 + N bytes for labels (uncompressed), which :func:`mnist_lit.data.idx.read_idx` checks against the header.
OFFICIAL_COUNTS = {"train": 60_000, "t10k": 10_000}
#: md5 of the official *uncompressed* files (the ``.gz`` md5s are torchvision's ``resources``).
#: t10k values checked here against the official files; train values as published with the data
#: by many projects (e.g. TensorFlow's MNIST tutorials). A data set without an entry for a file is
#: checked for structure only in that form.
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
#: Sizes in bytes of the official ``.gz`` files, which torchvision's ``resources`` give md5s for (the sizes
#: torchvision's own downloads report; MNIST's t10k files checked here against ../shared/data/mnist-10k).
OFFICIAL_SIZES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": 26_421_880,
        "train-labels-idx1-ubyte.gz": 29_515,
        "t10k-images-idx3-ubyte.gz": 4_422_102,
        "t10k-labels-idx1-ubyte.gz": 5_148,
    },
}


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


def missing_stems(data_dir: str | Path, dataset: str = "mnist") -> list[str]:
    """The stems of :data:`RAW_FILES` (all four, train first) found under none of their names in :func:`raw_folder`."""
    folder = raw_folder(data_dir, dataset)
    return [stem for pair in RAW_FILES.values() for stem in pair if find_raw_file(folder, stem) is None]


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
        content: the file as read by :func:`mnist_lit.data.idx.read_idx_stream` (its tensor and both md5s).

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
