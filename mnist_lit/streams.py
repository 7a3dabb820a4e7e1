"""The standard streams when the caller closed one (``>&-``, ``2>&-``) or reads only the start of the output
(``| head -1``): one ``error:`` line or a quiet exit 1, never a traceback, as Python's documentation advises (the
``signal`` module's "Note on SIGPIPE": Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises
``BrokenPipeError``).

With descriptor 1 closed, Python sets ``sys.stdout`` to None: ``print()`` then writes nothing (a run goes on), but
a help text or ``--print_config`` written there has nowhere to go (:func:`closed_stdout_error`). This module imports
nothing of the package.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

#: The exit status when the output could not be written (as Python's own advice, and ``cat`` with a closed stdout).
WRITE_FAILED_STATUS = 1


def hold_closed_descriptors() -> None:
    """Open ``os.devnull`` on each of descriptors 0, 1 and 2 that the caller closed, and make a closed ``sys.stderr``
    write there. Otherwise the next file opened takes the free descriptor (what a C library writes on its stderr
    would land in, say, a checkpoint being written), and ``print(..., file=sys.stderr)`` with ``sys.stderr`` None
    writes on stdout: an ``error:`` line in the output. ``sys.stdout`` stays None (:func:`closed_stdout_error`)."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:  # closed: os.open gives the lowest free descriptor, this one (those below it are open)
            os.open(os.devnull, os.O_RDONLY if descriptor == 0 else os.O_WRONLY)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  # for the whole process, like the stream it stands for


def closed_stdout_error(argv: Sequence[str]) -> str | None:
    """The ``error:`` line when ``argv`` asks for text on standard output (``--help``, ``-h``, ``--print_config``)
    and standard output is closed (``>&-``), else None."""
    if sys.stdout is not None:
        return None
    if not any(arg in ("-h", "--help") or arg.split("=", 1)[0] == "--print_config" for arg in argv):
        return None
    return (
        "error: standard output is closed (>&-), so there is nowhere to write what was asked for; "
        "leave it open or send it to a file (> FILE)"
    )


def write_out(text: str) -> None:
    """Write ``text`` on standard output and flush it; when the reader of the pipe has gone (``| head -1``), exit
    quietly (:func:`reader_gone`)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()


def reader_gone() -> NoReturn:
    """Exit :data:`WRITE_FAILED_STATUS` without a word: the reader of standard output has gone (``| head -1``).
    Standard output is pointed at ``os.devnull`` first, so that no later flush (the interpreter's at exit) fails
    again, as Python's documentation has it."""
    with open(os.devnull, "w") as devnull, contextlib.suppress(OSError, ValueError):  # not a file: nothing to flush
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    sys.exit(WRITE_FAILED_STATUS)
