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
from mnist_lit.pictures.decode import MAX_IMAGE_PIXELS, one_line
from mnist_lit.pictures.read import read_picture

#: File name endings taken from a folder (a single file or a glob is taken whatever its name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm")


def list_images(path: str | Path) -> list[str]:
    """The picture files named by ``path``: a file, a folder (its images sorted by name) or a glob.

    A folder contributes its files whose names end in one of :data:`IMAGE_SUFFIXES` (any case),
    hidden files excepted; a glob (``*``, ``?``, ``[``; ``**`` recurses) contributes every file it
    matches, sorted; a single file is taken whatever its name.

    Returns:
        file paths as strings, in the form ``path`` was given (relative stays relative).

    Raises:
        DataError: nothing matches, the folder holds no image files, or the path does not exist.
    """
    text = str(path)
    if glob.has_magic(text):
        files = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"no files match {text!r}; check the pattern (quote it so the shell leaves it alone)")
        return files
    folder = Path(text)
    if folder.is_dir():
        files = sorted(
            str(folder / p.name)
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"{text}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if folder.is_file():
        return [text]
    raise DataError(f"{text}: no such file, folder or glob; give a picture, a folder of pictures or a pattern")


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
