"""Peak memory and wall time of a real CLI process: `python -m mnist_lit ...` measured with wait4(2)."""

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
    """Run ``python -m mnist_lit ARGS`` and measure it; killed (SIGKILL) after ``timeout`` seconds."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "mnist_lit", *args], cwd=cwd, stdout=out, stderr=err,
                                env=full_env)
        killer = threading.Timer(timeout, lambda: os.kill(proc.pid, signal.SIGKILL))
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        seconds = time.monotonic() - started
        out.seek(0), err.seek(0)
        return Measured(proc.returncode, out.read(), err.read(), usage.ru_maxrss / 1024, seconds)


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
