"""Resuming a run keeps its TensorBoard logs free of repeated steps.

A resumed ``fit`` logs into the run's own ``version_N`` folder (:mod:`mnist_lit.run_settings`), so
TensorBoard shows one run whose curves continue. A run killed in the middle of an epoch has logged
steps after its last checkpoint (the steps of the unfinished epoch); the resumed run logs those
steps again. :func:`trim_event_files` removes the events logged after the checkpoint from the
folder's event files before the resumed run writes (each file rewritten to a temporary name, then
renamed), so every step appears once in the files, as after an uninterrupted run. Only records of
training that the checkpoint does not contain are removed; what the resumed run recomputes replaces
them.

Only one process resumes a run at a time: :func:`hold_run` locks the run folder before anything in it is
trimmed or written, and a second ``fit --ckpt_path`` of the same run is refused while the first one runs.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_lit.atomic import atomic_write
from mnist_lit.errors import CheckpointError
from mnist_lit.runs import LOCK_NAME

if TYPE_CHECKING:
    from tensorboard.compat.proto import event_pb2


_held: dict[Path, int] = {}  # run folder -> its open, locked lock file: held until the process ends


def hold_run(run_dir: str | Path) -> None:
    """Lock ``run_dir`` for this process, until it ends, so that no other ``fit`` resumes the same run meanwhile
    (a fit takes it on the folder it claims, and on the run it resumes or restarts).

    ``fcntl.flock`` (exclusive, non-blocking) on ``RUN/.fit.lock``: the kernel releases it when the process
    ends, however it ends (a killed run leaves no stale lock). Call it on rank 0 only (the other ranks of a
    run are not other runs). A file system without locks gives a notice, and the fit goes on unlocked.

    Raises:
        CheckpointError: another process holds the lock (it is resuming or restarting this run).
    """
    key = Path(run_dir).resolve()
    if key in _held:
        return
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(
            f"{run_dir} is being trained by another process; wait for it or start a new run (fit without --ckpt_path)"
        ) from None
    except OSError as err:  # e.g. ENOLCK on a file system without locks
        os.close(fd)
        print(f"Notice: cannot lock {run_dir} ({err.strerror}); make sure no other fit resumes it", file=sys.stderr)
        return
    _held[key] = fd


# Kept instead of SummaryWriter(purge_step=...): that only marks the files for readers that honour it, and by step
# alone, so events at the checkpoint's own step logged after it (next epoch's first lr, train_loss_step) would stay.
def trim_event_files(log_dir: str | Path, step: int, saved_at: float | None = None) -> tuple[int, int]:
    """Remove the events a resumed run will log again from the event files directly in ``log_dir``.

    Removed: events with ``step > step``, and events at ``step`` itself written after
    ``saved_at`` (the checkpoint's save time). Events at the checkpoint's own step come from both
    sides: the finished epoch's validation logs at ``global_step`` before the checkpoint is saved
    (e.g. image summaries), while the next epoch's first logs (learning rate at epoch start,
    ``train_loss_step`` of its first batch) use the same step after it. ``saved_at=None`` removes
    everything at ``step``.

    Each file holding such events is rewritten without them through a temporary file and
    ``os.replace``; a record cut short by a kill (the last one of a killed run) is dropped
    too. Files without such events are not touched.

    Args:
        log_dir: a run folder (``lightning_logs/version_N``).
        step: the resumed checkpoint's ``global_step``.
        saved_at: the checkpoint's save time in seconds since the epoch (``SAVED_AT_KEY`` in it, else its file's
            mtime, which a copy of the run folder may change).

    Returns:
        The number of events removed, and how many of them hold a test's results (a tag ``test_*``: logged by
        the run's test after fit, at the step of its last checkpoint).
    """
    # TensorBoard's reader and writer: only a resumed run needs them, not every command that imports the CLI.
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    def kept(event: event_pb2.Event) -> bool:
        return event.step < step or (event.step == step and saved_at is not None and event.wall_time <= saved_at)

    removed = tests = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        records = list(RawEventFileLoader(str(path)).Load())
        events = [event_pb2.Event.FromString(r) for r in records]
        kept_flags = [kept(event) for event in events]
        keep = [r for r, flag in zip(records, kept_flags, strict=True) if flag]
        complete = sum(len(r) + 16 for r in records) == path.stat().st_size  # 8+4 header, 4 footer bytes
        if len(keep) == len(records) and complete:
            continue
        with atomic_write(path) as handle:
            writer = RecordWriter(handle)
            for record in keep:
                writer.write(record)
        dropped = [event for event, flag in zip(events, kept_flags, strict=True) if not flag]
        removed += len(dropped)
        tests += sum(any(v.tag.startswith("test_") for v in event.summary.value) for event in dropped)
    return removed, tests


def trim_notice(log_dir: str | Path, removed: int, tests: int, test_after_fit: bool) -> str:
    """The line a resumed fit prints after :func:`trim_event_files` removed ``removed`` events, ``tests`` of
    them a test's results (:class:`mnist_lit.callbacks.MetricsHistory` drops them from ``metrics.json`` too: they
    tested the weights before the resume); a resumed run with ``test_after_fit`` tests again at its end, one
    without does not."""
    line = f"Resuming in {log_dir}; removed {removed} events logged after that checkpoint"
    if not tests:
        return f"{line} (the resumed run logs those steps again)"
    if test_after_fit:
        return (
            f"{line} (the resumed run logs those steps again; the earlier test's results are removed, here and "
            "from metrics.json, and the test at the end of this run replaces them)"
        )
    return (
        f"{line} (the resumed run logs its training steps again; the earlier test's results are removed, here "
        "and from metrics.json, and with --test_after_fit false this run does not test again)"
    )
