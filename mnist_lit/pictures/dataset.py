"""Picture files as a predict set for ``predict --data.predict_path``: the files a path names
(:func:`list_images`) and every file's digit crops in one batch (:class:`PictureFiles`)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mnist_lit.errors import DataError, ImageError
from mnist_lit.limits import MAX_LISTED_PATHS
from mnist_lit.pictures.decode import MAX_IMAGE_PIXELS, one_line
from mnist_lit.pictures.read import read_picture

#: File name endings taken from a folder (a single file or a glob is taken whatever its name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm")


def list_images(path: str | Path) -> list[str]:
    """The picture files named by ``path``: a file, a folder (its images sorted by name) or a glob.

    A path that exists is taken as it is, even when its name holds glob characters (``digit[1].png``). A folder
    contributes its files whose names end in one of :data:`IMAGE_SUFFIXES` (any case), hidden files excepted
    (symbolic links count, a broken or looping one too: it gets its own error row instead of vanishing from the
    count; sub-folders are not entered); a glob (``*``, ``?``, ``[``; ``**`` recurses,
    following symbolic links as Python's :mod:`glob` does) contributes every file it matches, each file once
    (by its real path), sorted; a single file is taken whatever its name.

    Returns:
        file paths as strings, in the form ``path`` was given (relative stays relative).

    Raises:
        DataError: ``path`` is empty, nothing matches, the folder holds no image files or cannot be read, the
            path does not exist, or a glob lists more than :data:`mnist_lit.limits.MAX_LISTED_PATHS` paths.
    """
    text = str(path)
    if not text.strip():
        raise DataError("--data.predict_path is empty; give a picture, a folder of pictures or a pattern")
    folder = Path(text)
    try:
        if folder.is_dir():
            return _folder_images(folder, text)
        if folder.is_file():
            return [text]
        if glob.has_magic(text):
            return _glob_images(text)
    except OSError as err:  # a folder on the way that cannot be searched
        raise DataError(f"{text}: cannot be read ({err.strerror or err}); check the folders' permissions") from None
    raise DataError(f"{text}: no such file, folder or glob; give a picture, a folder of pictures or a pattern")


def _folder_images(folder: Path, text: str) -> list[str]:
    """The image files of one folder, sorted by name (:func:`list_images`)."""
    try:
        files = sorted(
            str(folder / p.name)
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and (p.is_file() or p.is_symlink())
        )
    except OSError as err:
        raise DataError(f"{text}: cannot read this folder ({err.strerror or err}); check its permissions") from None
    if not files:
        raise DataError(f"{text}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def _glob_images(text: str) -> list[str]:
    """The files a glob matches, each once by real path, sorted (:func:`list_images`)."""
    found: dict[str, str] = {}  # real path -> the first path that reached it
    for count, match in enumerate(glob.iglob(text, recursive=True), start=1):
        if count > MAX_LISTED_PATHS:
            raise DataError(
                f"{text!r} lists more than {MAX_LISTED_PATHS:,} paths (symbolic links that loop back?); "
                "narrow the pattern"
            )
        if os.path.isfile(match):
            found.setdefault(os.path.realpath(match), match)
    if not found:
        raise DataError(f"no files match {text!r}; check the pattern (quote it so the shell leaves it alone)")
    return sorted(found.values())


class PictureFiles(Dataset):
    """Picture files, item ``i`` = ``(crops, file, error, quads)`` from :func:`mnist_lit.pictures.read.read_picture`.

    ``crops`` is uint8 (K, 1, 28, 28) (K = 0 when the file failed or holds no digit), ``error`` the one-line
    reason or ``""``, ``quads`` float32 (K, 4, 2) the digits' corners in the picture. A file that fails never
    stops the others. :meth:`__getitems__` returns a whole batch
    ``(uint8 (sum K, 1, 28, 28), [file] * B, [error] * B, [K] * B, [quads] * B)``: the model runs on all crops
    of the batch at once, and ``counts`` tell which rows belong to which file (use
    :func:`mnist_lit.data.datamodule.collate_batch`).

    Args:
        files: paths, e.g. from :func:`list_images`.
        max_pixels: the header size limit passed to :func:`read_picture`.
    """

    def __init__(self, files: list[str], max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.files, self.max_pixels = [str(f) for f in files], max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, str, np.ndarray]:
        file = self.files[index]
        try:
            picture = read_picture(file, self.max_pixels)
        except ImageError as err:
            return torch.zeros(0, 1, 28, 28, dtype=torch.uint8), file, one_line(err), np.zeros((0, 4, 2), np.float32)
        return picture.pixels, file, picture.refusal, picture.quads

    def __getitems__(
        self, indices: list[int]
    ) -> tuple[torch.Tensor, list[str], list[str], list[int], list[np.ndarray]]:
        items = [self[i] for i in indices]
        return (
            torch.cat([item[0] for item in items]),
            [item[1] for item in items],
            [item[2] for item in items],
            [len(item[0]) for item in items],
            [item[3] for item in items],
        )
