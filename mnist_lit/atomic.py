"""Write a file so that it is either complete or absent: temporary name, fsync, then ``os.replace``."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def temp_path_beside(path: str | Path) -> Path:
    """A fresh hidden name next to ``path``: ``DIR/.NAME.<random>.tmp`` (same file system, so the
    final rename is atomic; never ending in ``.ckpt`` or ``.gz``, so no reader takes it for the real file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_write(path: str | Path, replace: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success it replaces ``path``.

    The data is flushed and fsynced before ``os.replace``, so after a crash or SIGKILL ``path``
    holds either its old content or the complete new one, never a part. On an exception the
    temporary file is removed and the exception propagates. The file gets the usual permissions
    (0666 minus the umask), like a plain ``open(path, "wb")``. With ``replace=False`` the complete file
    gets its name by ``os.link``, which never replaces one.

    Raises:
        FileExistsError: ``replace=False`` and ``path`` exists (then nothing is written there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`; returns the path."""
    with atomic_write(path) as handle:
        handle.write(text.encode())
    return Path(path)


def write_csv(
    path: str | Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]], replace: bool = True
) -> Path:
    """Write a CSV table with :class:`csv.DictWriter` (a header line of ``fieldnames``, then one line per row,
    ``\\n`` line ends; a missing key or ``None`` is an empty cell) with :func:`atomic_write`; returns the path.
    Every table of a run (predictions, confusion matrices, cv folds, tune trials, lr_find) is written here.

    Raises:
        FileExistsError: ``replace=False`` and ``path`` exists (nothing is written there)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, replace) as handle:
        handle.write(buffer.getvalue().encode())
    return Path(path)
