"""Picture files as a predict set for ``predict --data.predict_path``: every file's digit crops in one batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mnist_lit.errors import ImageError
from mnist_lit.images import MAX_IMAGE_PIXELS, _one_line
from mnist_lit.pictures.read import read_picture


class PictureFiles(Dataset):
    """Picture files, item ``i`` = ``(crops, file, error, quads)`` from :func:`mnist_lit.pictures.read.read_picture`.

    ``crops`` is uint8 (K, 1, 28, 28) (K = 0 when the file failed or holds no digit), ``error`` the one-line
    reason or ``""``, ``quads`` float32 (K, 4, 2) the digits' corners in the picture. A file that fails never
    stops the others. :meth:`__getitems__` returns a whole batch
    ``(uint8 (sum K, 1, 28, 28), [file] * B, [error] * B, [K] * B, [quads] * B)``: the model runs on all crops
    of the batch at once, and ``counts`` tell which rows belong to which file (use
    :func:`mnist_lit.data.collate_batch`).

    Args:
        files: paths, e.g. from :func:`mnist_lit.images.list_images`.
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
            return torch.zeros(0, 1, 28, 28, dtype=torch.uint8), file, _one_line(err), np.zeros((0, 4, 2), np.float32)
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
