"""Peak memory and wall time of a real CLI process: `python -m mnist_lit ...` measured with wait4(2).

Why a launcher: Linux keeps a process's peak RSS across fork and exec (``ru_maxrss`` starts at the parent's
high-water mark), so a child of a large pytest process reports pytest's memory, not its own (CI saw every
measured command at exactly 1,322 MiB). The command is therefore started by a small fresh Python process
(this file run as a script), and that launcher's wait4 is the measurement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    """A finished CLI run: exit status, its output, peak RSS in MiB (the process and the children it
    waited for, from wait4's rusage: ``ru_maxrss`` is in KiB on Linux) and wall seconds."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float
    seconds: float


def run_measured(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> Measured:
    """Run ``python -m mnist_lit ARGS`` and measure it; killed (SIGKILL, with its launcher) after ``timeout`` s."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **(env or {})}
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as usage,
    ):
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, __file__, usage.name, sys.executable, "-m", "mnist_lit", *args],
            cwd=cwd,
            stdout=out,
            stderr=err,
            env=full_env,
            start_new_session=True,
        )
        killer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        killer.start()
        try:
            proc.wait()
        finally:
            killer.cancel()
        seconds = time.monotonic() - started
        fields = usage.read().split()  # empty when the timeout killed the launcher first
        returncode, max_rss_kib = (int(field) for field in fields) if fields else (proc.returncode, float("nan"))
        out.seek(0), err.seek(0)
        return Measured(returncode, out.read(), err.read(), max_rss_kib / 1024, seconds)


def launch(usage_path: str, command: list[str]) -> int:
    """Run ``command``, write "EXIT_STATUS MAX_RSS_KIB" of it to ``usage_path``; return its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    returncode = os.waitstatus_to_exitcode(status)  # -N when killed by signal N, as Popen reports it
    Path(usage_path).write_text(f"{returncode} {usage.ru_maxrss}")
    return returncode


def rss_mib(pid: int) -> float:
    """Current resident set size of a running process, MiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size so far of a running process, MiB (VmHWM in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1], sys.argv[2:]) & 0xFF)
