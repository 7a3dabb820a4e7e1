"""``predictions.csv``: the predictions of ``predict``, on the test set or on picture files."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from mnist_lit.atomic import write_csv
from mnist_lit.callbacks.common import run_dir
from mnist_lit.errors import DataError

#: The columns of ``predictions.csv`` for the test set: ``prob`` is the probability of ``pred``.
COLUMNS = ["index", "label", "pred", "prob", *(f"prob_{d}" for d in range(10))]

#: One picture kept for the sheet: ``(index, crops uint8 (K, 1, 28, 28), quads float32 (K, 4, 2))``.
SheetPicture = tuple[int, torch.Tensor, np.ndarray]


def test_row(row: Sequence) -> dict[str, object]:
    """A :data:`COLUMNS` row of ``predictions.csv`` from ``[index, label or None, pred, prob, *probs]``."""
    index, label, pred, prob, *probs = row
    return dict(zip(COLUMNS, [index, label, pred, f"{prob:.6f}", *(f"{p:.6f}" for p in probs)], strict=True))


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` into the run directory and prints the first prediction.

    One row per predicted image, sorted by its index in the predict set:
    ``index, label, pred, prob, prob_0 .. prob_9`` where ``prob`` is the probability of
    ``pred``. Under several processes each rank's rows are gathered and rank 0 writes
    the file once (to a temporary name, then renamed).

    Pictures (``--data.predict_path``, :class:`mnist_lit.pictures.PictureFiles` batches) get instead
    :data:`PICTURE_COLUMNS` per file (:func:`picture_rows`), a table on stdout, one
    ``error: FILE: reason`` line on stderr per file that failed, and the PNG sheet of
    ``--data.predict_sheet`` (:func:`write_picture_predictions`); ``failed_files`` then counts
    the failures (the CLI exits with status 1 when it is not 0). For the sheet the writer keeps the crops and
    boxes of its pictures only (:func:`sheet_pictures`): at most :data:`mnist_lit.sheet.SHEET_MAX_IMAGES`, the
    lowest indices, gathered from every rank with the rows.

    Args:
        output_dir: folder for the CSV; default: the trainer's ``log_dir`` (``lightning_logs/version_N``).
        filename: name of the CSV file.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.filename = output_dir, filename
        self._rows: list[list] = []
        self._sheet: list[SheetPicture] = []  # the sheet's pictures seen so far, lowest indices first
        self._sheet_limit = 0  # how many pictures the sheet shows; 0: no sheet asked for
        # rank 0's sorted rows and the sheet's pictures, written and reported at teardown
        self._finished: tuple[list[list], list[SheetPicture]] | None = None
        self.failed_files = 0

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        """Refuses, before anything is predicted, a CSV that would replace a file: a run folder is new, but with
        ``--trainer.logger false`` or ``fast_dev_run`` there is none and the CSV goes into the current folder.

        Raises:
            DataError: the CSV's file exists."""
        if trainer.is_global_zero and (path := self._path(trainer)).exists():
            raise DataError(
                f"{path} exists; give the run a folder of its own (no --trainer.logger false or "
                "--trainer.fast_dev_run) or move that file (predictions never replace a file)"
            )
        self._rows, self._sheet = [], []
        self._sheet_limit = 0
        if _sheet_path(trainer) is not None:
            from mnist_lit.sheet import SHEET_MAX_IMAGES  # matplotlib and OpenCV: imported only for a sheet

            self._sheet_limit = SHEET_MAX_IMAGES
        self.failed_files = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        probs = prediction["probs"].float().cpu()
        preds = prediction["preds"].cpu()
        indices = batch_indices if batch_indices is not None else range(len(preds))
        if len(batch) == 5 and isinstance(batch[1], (list, tuple)):  # pictures: mnist_lit.pictures.PictureFiles
            self._rows += picture_rows(indices, batch, probs)
            if self._sheet_limit:
                self._sheet = _lowest([*self._sheet, *sheet_pictures(indices, batch)], self._sheet_limit)
            return
        labels = batch[1].cpu() if len(batch) > 1 and torch.is_tensor(batch[1]) else [None] * len(preds)
        for index, label, pred, row in zip(indices, labels, preds.tolist(), probs.tolist(), strict=False):
            self._rows.append([int(index), None if label is None else int(label), pred, row[pred], *row])

    def _path(self, trainer) -> Path:
        """The CSV's path: ``filename`` in ``output_dir``, or in the run folder (:func:`run_dir`)."""
        return (Path(self.output_dir) if self.output_dir else run_dir(trainer)) / self.filename

    def _gathered(self, trainer) -> tuple[list[list], list[SheetPicture]]:
        """Every rank's rows and sheet pictures (one collective under DDP: every rank calls it)."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list = [None] * trainer.world_size
            dist.all_gather_object(parts, (self._rows, self._sheet))
            return [row for rows, _ in parts for row in rows], [item for _, sheet in parts for item in sheet]
        return self._rows, self._sheet

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        rows, sheet = self._gathered(trainer)
        rows = sorted(rows, key=lambda row: row[0])
        pictures = bool(rows) and isinstance(rows[0][1], str)
        self.failed_files = sum(1 for row in rows if row[-1]) if pictures else 0
        self._finished = (rows, _lowest(sheet, self._sheet_limit)) if trainer.is_global_zero and rows else None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Rank 0 writes and reports once the run is over: after the progress bar has closed, which would
        otherwise draw its last line again below the report."""
        finished, self._finished = self._finished, None
        if stage != "predict" or not finished:
            return
        rows, sheet = finished
        pictures = isinstance(rows[0][1], str)
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never over a file: one another run wrote since on_predict_epoch_start (two at once)
            if pictures:  # rows: [index, *PICTURE_COLUMNS]
                shown = [(crops, quads) for _, crops, quads in sheet]
                write_picture_predictions([row[1:] for row in rows], path, _sheet_path(trainer), shown, replace=False)
                return
            write_csv(path, COLUMNS, (test_row(row) for row in rows), replace=False)
        except FileExistsError:
            raise DataError(f"{path} appeared while predicting; not replaced, no predictions written") from None
        first = rows[0]
        print(f"Wrote {len(rows)} predictions to {path}")
        print(
            f"Sample {first[0]} probabilities: [{', '.join(f'{p:.4f}' for p in first[4:])}]"
            f" -> predicted digit {first[2]}" + ("" if first[1] is None else f" (label {first[1]})")
        )
        sys.stdout.flush()


#: The columns of ``predictions.csv`` for pictures. ``pred``/``confidence``/``prob_*``: the digit of a picture of
#: one digit (empty for a number: see ``digits``); ``digits``: the number read left to right; ``digit_confidences``:
#: each digit's probability, space-separated; ``boxes``: each digit's ``x0 y0 x1 y1`` in the picture's pixels,
#: ``;``-separated; ``error``: why a file gave no answer (unreadable, "no digit found", "not a digit: ...").
PICTURE_COLUMNS = [
    "file",
    "pred",
    "confidence",
    "digits",
    "digit_confidences",
    "boxes",
    *(f"prob_{d}" for d in range(10)),
    "error",
]


def _printable(name: str) -> str:
    """``name`` with control characters escaped as Python writes them (``\\n``), so that a file name holding a line
    break cannot start a line of its own in the printed table (the CSV keeps the name as it is)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def picture_rows(indices, batch, probs: torch.Tensor) -> list[list]:
    """One row ``[index, *PICTURE_COLUMNS values]`` per file of a :class:`mnist_lit.pictures.PictureFiles` batch
    ``(crops, files, errors, counts, quads)``, whose crops' probabilities float32 (sum K, 10) are ``probs``;
    the number is read and refused by :func:`mnist_lit.pictures.verdict.read_digits`, with the file's own uint8
    crops (its "digit or not" check looks at them)."""
    from mnist_lit.pictures import PictureDigits, read_digits  # OpenCV, when pictures are predicted

    crops, files, errors, counts, quads = batch
    rows, start = [], 0
    for index, file, error, count, quad in zip(indices, files, errors, counts, quads, strict=False):
        part, own = probs[start : start + count], crops[start : start + count].cpu()
        start += count
        reading = read_digits(PictureDigits(file, own, quad, (0, 0), error), part)
        one = len(reading.digits) == 1
        boxes = ";".join(" ".join(f"{v:.0f}" for v in (*q.min(0), *q.max(0))) for q in quad) if reading.digits else ""
        rows.append(
            [
                int(index),
                file,
                reading.pred,
                reading.confidence,
                reading.digits,
                " ".join(f"{c:.6f}" for c in reading.confidences),
                boxes,
                part[0].tolist() if one else None,
                reading.error,
            ]
        )
    return rows


def sheet_pictures(indices, batch) -> list[SheetPicture]:
    """``(index, crops, quads)`` per file of a :class:`mnist_lit.pictures.PictureFiles` batch
    ``(crops, files, errors, counts, quads)``: the file's own uint8 (K, 1, 28, 28) crops, copied to the CPU
    (so that the batch is not kept alive), and its float32 (K, 4, 2) box corners."""
    crops, _, _, counts, quads = batch
    parts = torch.split(crops.cpu(), list(counts))
    return [
        (int(index), part.clone(), np.asarray(quad, dtype=np.float32))
        for index, part, quad in zip(indices, parts, quads, strict=False)
    ]


def _lowest(pictures: list[SheetPicture], limit: int) -> list[SheetPicture]:
    """The ``limit`` pictures of lowest index, in index order: those that come first in the CSV."""
    return sorted(pictures, key=lambda picture: picture[0])[:limit]


def _sheet_path(trainer) -> str | None:
    """``--data.predict_sheet``: the PNG sheet the datamodule asks for, or ``None``."""
    return getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("predict_sheet")


def picture_row(file, pred, confidence, digits, digit_confidences, boxes, probs, error) -> dict[str, object]:
    """A :data:`PICTURE_COLUMNS` row of ``predictions.csv`` from one row of :func:`picture_rows` (without its index)."""
    values = [
        file,
        pred,
        None if confidence is None else f"{confidence:.6f}",
        digits,
        digit_confidences,
        boxes,
        *([None] * 10 if probs is None else [f"{p:.6f}" for p in probs]),
        error,
    ]
    return dict(zip(PICTURE_COLUMNS, values, strict=True))


def write_picture_predictions(
    rows: Sequence[Sequence],
    path: str | Path,
    sheet: str | Path | None = None,
    sheet_crops: Sequence[tuple[torch.Tensor, np.ndarray]] = (),
    replace: bool = True,
) -> None:
    """Report predictions on picture files: CSV, a table on stdout, errors on stderr, optional PNG sheet.

    Args:
        rows: per file, in order, ``(file, pred, confidence, digits, digit_confidences, boxes, probs, error)``
            (:func:`picture_rows`): ``pred`` the digit of a one-digit picture (else None), ``confidence``
            the probability that the whole reading is right (product over its digits), ``digits`` the
            number read, ``probs`` the 10 probabilities of a one-digit picture (else None); a file that
            failed has empty values and ``error`` a one-line message (``""`` otherwise).
        path: the CSV with :data:`PICTURE_COLUMNS`, written atomically (empty cells where not applicable).
        sheet: a PNG path for :func:`mnist_lit.sheet.render_sheet`, or ``None``.
        sheet_crops: with ``sheet``, ``(crops, quads)`` of the first rows' files, at least
            ``min(len(rows), SHEET_MAX_IMAGES)`` of them: uint8 (K, 1, 28, 28) and float32 (K, 4, 2), what
            :class:`mnist_lit.pictures.PictureFiles` gave the model (:func:`sheet_pictures`).
        replace: whether the CSV may replace a file at ``path``.

    Raises:
        ValueError: a sheet is asked for with fewer ``sheet_crops`` than it shows.
        DataError: the sheet's file exists (it never replaces one; the CSV is written first).
        FileExistsError: ``replace=False`` and the CSV's file exists (nothing written).
    """
    write_csv(path, PICTURE_COLUMNS, (picture_row(*row) for row in rows), replace)
    width = max(len("file"), *(len(_printable(row[0])) for row in rows))
    print(f"{'file':<{width}}  digits      confidence")
    for file, _, confidence, digits, *_, error in rows:
        reason = error.split(": ", 1)[-1] if error.startswith(f"{file}: ") else error
        print(
            f"{_printable(file):<{width}}  "
            + (f"{'-':<10}           -  error: {reason}" if error else f"{digits:<10}  {confidence:>10.4f}")
        )
    failed = [row[-1] for row in rows if row[-1]]
    for error in failed:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"Predicted {len(rows) - len(failed)} of {len(rows)} pictures"
        + (f" ({len(failed)} failed or hold no digit, see the error lines)" if failed else "")
        + f"; wrote {path}"
    )
    if sheet is not None:
        _write_sheet(rows, sheet, sheet_crops)
    sys.stdout.flush()
    sys.stderr.flush()


def _write_sheet(rows: Sequence[Sequence], sheet: str | Path, sheet_crops: Sequence[tuple]) -> None:
    """The PNG sheet of the first rows (:func:`write_picture_predictions`' arguments), and a line saying so."""
    from mnist_lit.sheet import SHEET_MAX_IMAGES, render_sheet  # matplotlib: imported only for a sheet

    shown = min(len(rows), SHEET_MAX_IMAGES)
    if len(sheet_crops) < shown:
        raise ValueError(f"the sheet shows {shown} pictures: give the crops and quads of as many")
    pictures = zip(rows[:shown], sheet_crops, strict=False)
    try:
        render_sheet([(row[0], row[3], row[2], row[-1], crops, quads) for row, (crops, quads) in pictures], sheet)
    except FileExistsError:  # made by someone else while predicting: the sheet never replaces a file
        raise DataError(
            f"predict_sheet={str(sheet)!r} appeared while predicting; not replaced, no sheet written"
        ) from None
    print(f"Wrote the sheet of {shown} of {len(rows)} pictures to {sheet}")
