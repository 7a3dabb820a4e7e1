"""SIGTERM during ``fit`` (a job scheduler's stop): save ``last.ckpt`` so that ``fit --ckpt_path last`` resumes;
during ``validate``/``test``/``predict``: stop at the end of the batch (:class:`SigtermStop`). Ctrl-C (SIGINT):
Lightning's graceful shutdown, saving nothing (every process of a DDP run gets it, each wherever it is, so a
checkpoint's collective save could wait forever); :class:`SigtermCheckpoint` notes it for the exit line.

Lightning turns SIGTERM into ``SIGTERMException`` at the next batch boundary (every rank, under DDP)
and calls the callbacks' ``on_exception``; the exception is a ``SystemExit`` without a code, so the
process would exit with status 0 and a scheduler would see success. :class:`SigtermCheckpoint` saves
the checkpoint; :func:`mnist_lit.cli.main` exits with :data:`SIGTERM_EXIT_STATUS`. Outside Lightning's loops
(parsing, building the trainer, between ``fit`` and its test) Lightning has no handler in place and SIGTERM
killed the process without a line: :func:`stop_between_runs` raises the same exception there.
"""

from __future__ import annotations

import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

#: 128 + 15: the status a shell reports for a process ended by SIGTERM.
SIGTERM_EXIT_STATUS = 143
#: 128 + 2: the status a shell reports for a process ended by SIGINT (Ctrl-C).
SIGINT_EXIT_STATUS = 130


class SigtermCheckpoint(Callback):
    """On SIGTERM during ``fit``, save the training state (mid-epoch) as ``last.ckpt``.

    The file goes where the ``ModelCheckpoint`` with ``filename: last`` writes (else beside the first
    ``ModelCheckpoint``'s files), through the trainer's ``CheckpointIO`` (atomic, with its checksum).
    The class attribute ``saved`` holds its path afterwards (``None`` while nothing was saved): the
    exception ends the CLI's constructor, so ``main`` reads it from the class.
    """

    saved: Path | None = None
    #: The best (else last) checkpoint of a fit whose training finished: what to test if the test after it stops.
    trained: Path | None = None
    #: Ctrl-C ended a run (Lightning then exits with status 1): ``(True, the run's last.ckpt saved earlier or None)``.
    interrupted: tuple[bool, Path | None] = (False, None)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if isinstance(exception, KeyboardInterrupt):
            earlier = self._last_path(trainer) if fitting else None
            type(self).interrupted = (True, earlier if earlier is not None and earlier.is_file() else None)
        if not isinstance(exception, SIGTERMException) or not fitting:
            return
        path = self._last_path(trainer)
        if path is not None:
            trainer.save_checkpoint(path, weights_only=False)  # the whole training state, for resuming
            type(self).saved = path

    def on_fit_end(self, trainer, pl_module) -> None:
        callback = trainer.checkpoint_callback
        found = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        type(self).trained = Path(found) if found else None

    @staticmethod
    def _last_path(trainer) -> Path | None:
        """Where ``last.ckpt`` goes: the ``ModelCheckpoint`` with ``filename: last``, else the first one's folder."""
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
        if not callbacks:
            return None
        chosen = next((c for c in callbacks if c.filename == "last"), callbacks[0])
        return Path(str(chosen.dirpath)) / f"last{chosen.FILE_EXTENSION}"


class SigtermStop(Callback):
    """On SIGTERM during ``validate``, ``test`` or ``predict`` (and the test after ``fit``), stop at the end of the
    current batch by raising ``SIGTERMException``, as ``fit`` does.

    Lightning checks for SIGTERM between training batches, between evaluation batches except the last, and never
    while predicting: a stopped ``predict`` went on and exited 0. A ``fit``'s own validation is left to Lightning
    (it stops at the next training batch, where :class:`SigtermCheckpoint` saves the training state).
    """

    @staticmethod
    def _stop_on_sigterm(trainer) -> None:
        if trainer.received_sigterm and trainer.state.fn != TrainerFn.FITTING:
            raise SIGTERMException

    def on_validation_batch_end(self, trainer, *args, **kwargs) -> None:
        self._stop_on_sigterm(trainer)

    def on_test_batch_end(self, trainer, *args, **kwargs) -> None:
        self._stop_on_sigterm(trainer)

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        self._stop_on_sigterm(trainer)


def stop_between_runs(signum: int, frame) -> None:
    """The SIGTERM handler of ``fit``/``validate``/``test``/``predict`` outside Lightning's loops: raise
    ``SIGTERMException`` at once (nothing is being trained or written there). Inside the loops Lightning's own
    handler calls this one too (it keeps the handler it found); then it does nothing, and Lightning stops at the
    next batch boundary."""
    if signal.getsignal(signal.SIGTERM) is stop_between_runs:
        raise SIGTERMException
