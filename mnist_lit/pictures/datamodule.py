"""Your pictures as a predict set: ``predict --data PicturesDataModule --data.predict_path PATH``.

LightningCLI's ``--data`` takes a class path, so the pictures are a DataModule of their own and
:class:`mnist_lit.data.MNISTDataModule` stays about the IDX files. Each picture goes through
:func:`mnist_lit.pictures.read_picture` (one digit or a whole number) when its batch is loaded; a file that
fails or holds no digit gets its error row from :class:`mnist_lit.callbacks.PredictionWriter`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from mnist_lit.data.datamodule import check_loader_bounds, collate_batch
from mnist_lit.data.sharding import eval_sampler, per_device_batch_size, world_size_of
from mnist_lit.errors import DataError
from mnist_lit.hparams import TypedHParams, refuse_nulls
from mnist_lit.pictures.dataset import PictureFiles, list_images
from mnist_lit.pictures.decode import MAX_IMAGE_PIXELS


def check_sheet_path(sheet: str) -> None:
    """Refuse a sheet path that could not be written, or would replace a file, before anything is predicted.

    Raises:
        DataError: not a ``.png`` name, an existing file or folder (an input picture, a run's figure: nothing
            already written is replaced), or a folder that does not exist or cannot be written to.
    """
    path = Path(sheet)
    if not sheet.lower().endswith(".png"):
        raise DataError(f"predict_sheet={sheet!r}: the sheet is a .png file; give a path ending in .png")
    if os.path.lexists(path):
        raise DataError(f"predict_sheet={sheet!r} exists; give a new file name (the sheet never replaces a file)")
    try:  # the one sure test that a file can be made there (permissions, read-only or virtual file systems)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise DataError(
            f"predict_sheet={sheet!r}: cannot write into {str(path.parent)!r} ({err.strerror or err}); "
            "give a path in a writable folder"
        ) from None


class PicturesDataModule(TypedHParams, LightningDataModule):
    """Picture files to predict; no training, validation or test data.

    Batches are :class:`mnist_lit.pictures.PictureFiles` batches
    ``(crops uint8 (sum K, 1, 28, 28), files, errors, counts, quads)``: every digit found in the batch's
    pictures, 0-255, white ink on black as MNIST (the model scales them).

    Args:
        predict_path: an image file, a folder (its images, sorted by name) or a glob
            (:func:`mnist_lit.pictures.dataset.list_images`).
        predict_sheet: also draw a PNG sheet to this new file: each picture, the digits found in it and what
            was read (:mod:`mnist_lit.sheet`); ``None``: no sheet. An existing file is never replaced.
        batch_size: pictures per batch, all devices together (each picture may hold several digits).
        num_workers: DataLoader worker processes reading pictures in parallel (0: in the main process).
        max_pixels: the largest ``width * height`` a picture's header may claim
            (:data:`mnist_lit.pictures.decode.MAX_IMAGE_PIXELS`); larger files get an error row undecoded.

    Raises:
        DataError: ``predict_path`` names no picture (:func:`mnist_lit.pictures.dataset.list_images`: checked
            here, before a run folder is made), ``predict_sheet`` is refused by :func:`check_sheet_path`, a number below 1
            (``num_workers``: below 0), or ``batch_size`` or ``num_workers`` above its bound
            (:func:`mnist_lit.data.datamodule.check_loader_bounds`).
    """

    def __init__(
        self,
        predict_path: str,
        predict_sheet: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        refuse_nulls(PicturesDataModule, locals(), "data")
        super().__init__()
        if predict_sheet is not None:
            check_sheet_path(predict_sheet)
        if batch_size < 1 or max_pixels < 1:
            raise DataError(f"batch_size and max_pixels must be positive, got {batch_size} and {max_pixels}")
        check_loader_bounds(batch_size, num_workers)
        list_images(predict_path)
        self.save_hyperparameters()
        self.data_predict: PictureFiles | None = None

    def setup(self, stage: str | None = None) -> None:
        """List the pictures (read later, batch by batch); only ``predict`` has data here."""
        if stage not in (None, "predict"):
            raise DataError(f"{PicturesDataModule.__name__} only predicts: {stage} needs MNISTDataModule's data")
        if self.data_predict is None:
            self.data_predict = PictureFiles(list_images(self.hparams.predict_path), self.hparams.max_pixels)

    def predict_dataloader(self) -> DataLoader:
        if self.data_predict is None:  # Lightning calls setup("predict") first; a hand-driven DataModule may not
            raise RuntimeError("call setup('predict') before asking for the predict dataloader")
        batch_size = per_device_batch_size(self.hparams.batch_size, world_size_of(self.trainer), training=False)
        return DataLoader(
            self.data_predict,
            batch_size=batch_size,
            sampler=eval_sampler(self.data_predict, self.trainer),
            num_workers=self.hparams.num_workers,
            collate_fn=collate_batch,
            persistent_workers=False,
        )
