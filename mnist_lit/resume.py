"""Resuming a run: find its last checkpoint, continue its ``version_N`` folder, keep its logs free of repeats.

Lightning alone resolves ``fit --ckpt_path last`` inside the *new* run's checkpoint folder
(``ModelCheckpoint._find_last_checkpoints``), and a new CLI process starts a new
``version_N+1``: a second ``fit --ckpt_path last`` finds nothing and trains from scratch. So
the CLI resolves ``last`` itself (:func:`find_last_checkpoint`), and a resumed ``fit`` writes
into the version folder the checkpoint came from (:func:`version_of`): TensorBoard then shows
one run whose curves continue.

A run killed in the middle of an epoch has logged steps after its last checkpoint (the steps
of the unfinished epoch); the resumed run logs those steps again. :func:`trim_event_files`
removes the events logged after the checkpoint from the folder's event files before the
resumed run writes (each file rewritten to a temporary name, then renamed), so every
step appears once in the files, as after an uninterrupted run. Only records of training that the
checkpoint does not contain are removed; what the resumed run recomputes replaces them.
"""

from __future__ import annotations

import re
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from mnist_lit.atomic import atomic_write
from mnist_lit.checkpoint import CheckpointError

LAST_NAME = "last.ckpt"  # ModelCheckpoint.CHECKPOINT_NAME_LAST + FILE_EXTENSION
_VERSION = re.compile(r"version_(\d+)")


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The most recently written ``ROOT/version_*/checkpoints/last.ckpt``, or ``None``.

    Args:
        root: the logger's folder of versions, e.g. ``./lightning_logs``.
    """
    candidates = [p for p in Path(root).glob(f"version_*/checkpoints/{LAST_NAME}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def version_of(ckpt_path: str | Path, root: str | Path) -> int | None:
    """``N`` if ``ckpt_path`` is ``ROOT/version_N/checkpoints/*.ckpt``, else ``None``."""
    ckpt, root = Path(ckpt_path).resolve(), Path(root).resolve()
    match = _VERSION.fullmatch(ckpt.parent.parent.name)
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == root and match:
        return int(match.group(1))
    return None


def trim_event_files(log_dir: str | Path, step: int, saved_at: float | None = None) -> int:
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
        saved_at: the checkpoint's save time in seconds since the epoch (its file's mtime).

    Returns:
        The number of events removed.
    """
    def kept(event: event_pb2.Event) -> bool:
        return event.step < step or (event.step == step and saved_at is not None and event.wall_time <= saved_at)

    removed = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        records = list(RawEventFileLoader(str(path)).Load())
        keep = [r for r in records if kept(event_pb2.Event.FromString(r))]
        complete = sum(len(r) + 16 for r in records) == path.stat().st_size  # 8+4 header, 4 footer bytes
        if len(keep) == len(records) and complete:
            continue
        with atomic_write(path) as handle:
            writer = RecordWriter(handle)
            for record in keep:
                writer.write(record)
        removed += len(records) - len(keep)
    return removed


def logger_root(trainer_config) -> Path | None:
    """The folder of ``version_N`` run folders for a parsed ``trainer`` config, or ``None``.

    A ``TensorBoardLogger`` or ``CSVLogger`` given as ``class_path``/``init_args``:
    ``save_dir/name``; the default logger (``logger`` unset or true): ``default_root_dir/lightning_logs``.
    """
    logger, default_root = trainer_config.get("logger"), trainer_config.get("default_root_dir") or "."
    if logger is None or logger is True:
        return Path(default_root) / "lightning_logs"
    if hasattr(logger, "class_path") and logger.class_path.rsplit(".", 1)[-1] in ("TensorBoardLogger", "CSVLogger"):
        args = logger.get("init_args") or {}
        return Path(args.get("save_dir") or default_root) / (args.get("name") or "lightning_logs")
    return None


def resolve_last(config, subcommand: str) -> str:
    """Turn ``ckpt_path: last`` into the newest ``last.ckpt`` of any run under the logger's folder.

    Returns ``config.ckpt_path`` unchanged unless it is ``"last"``. When no ``last.ckpt`` exists,
    ``fit`` keeps ``"last"`` (Lightning then looks in its own checkpoint folders and otherwise
    trains from the start, so a job can always pass ``--ckpt_path last``).

    Raises:
        CheckpointError: ``validate``/``test``/``predict`` with ``last`` and no ``last.ckpt``.
    """
    if config.get("ckpt_path") != "last":
        return config.get("ckpt_path")
    root = logger_root(config.trainer)
    found = find_last_checkpoint(root) if root is not None else None
    if found is not None:
        return str(found)
    if subcommand == "fit":
        return "last"
    raise CheckpointError(f"--ckpt_path last: no {root or 'lightning_logs'}/version_*/checkpoints/{LAST_NAME} found; "
                          "train first (fit) or give the path of a checkpoint")


def continue_version(config, ckpt_path: str | Path, global_step: int, save_config_kwargs: dict) -> int | None:
    """For a resumed ``fit``: log into the checkpoint's own ``version_N`` folder.

    Sets the logger's ``version`` in ``config`` to ``N`` when ``ckpt_path`` lies in
    ``ROOT/version_N/checkpoints/``, and saves the resumed run's configuration as
    ``config_resume_step{global_step}.yaml`` beside the first run's ``config.yaml`` (kept as
    it is). A checkpoint from elsewhere starts a new version folder as usual.

    Returns:
        ``N``, or ``None`` when the run goes to a new folder.
    """
    root = logger_root(config.trainer)
    version = version_of(ckpt_path, root) if root is not None else None
    logger = config.trainer.get("logger")
    if version is None or not hasattr(logger, "class_path"):
        return None
    logger.init_args.version = version
    save_config_kwargs.update(config_filename=f"config_resume_step{global_step}.yaml", overwrite=True)
    return version
