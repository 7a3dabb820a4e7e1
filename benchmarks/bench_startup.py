"""Start-up as users feel it: whole-process times of answers that need no training, against a bare ``import torch``.

    python benchmarks/bench_startup.py [--runs 7]

Runs each command ``--runs`` times, interleaved (one of each, then again), so that load on a shared
machine affects all of them alike; prints the median wall time of each and its ratio to
``python -c "import torch"`` measured in the same rounds, the load average before and after, and
which packages cost most in ``fit --help`` (``python -X importtime``, cumulative microseconds of
top-level packages). Issue 20's targets: ``--help`` <= 1.35 x ``import torch``; a usage error or a bad file
path within 0.5 s of it.

``fit --help`` and a usage error that only the parser can find (``--trainer.max_epochs x``, a mistyped option)
are timed twice: "first" with nothing remembered (``MNIST_LIT_CACHE_DIR`` a path that cannot be written, so every
run builds the parser with Lightning) and "remembered" once a run has saved the options (mnist_lit.option_cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    # the floor of every Lightning command: Lightning imports torchmetrics, torchvision's models, torch._dynamo
    "import lightning.pytorch.cli": [sys.executable, "-c", "import lightning.pytorch.cli"],
    "--help": [sys.executable, "-m", "mnist_lit", "--help"],
    "fit --config missing.yaml": [sys.executable, "-m", "mnist_lit", "fit", "--config", "missing.yaml"],
    "test --ckpt_path missing.ckpt": [sys.executable, "-m", "mnist_lit", "test", "--ckpt_path", "missing.ckpt"],
}
#: Timed "first" (nothing remembered) and "remembered" (the options saved by an earlier run).
PARSER_ANSWERS = {
    "fit --help": ["fit", "--help"],
    "fit --trainer.max_epochs x": ["fit", "--trainer.max_epochs", "x"],
    "fit ... --trainer.max_epoks 3": ["fit", "--config", "configs/mnist.yaml", "--trainer.max_epoks", "3"],
}
for _name, _args in PARSER_ANSWERS.items():
    COMMANDS[f"{_name} (first)"] = [sys.executable, "-m", "mnist_lit", *_args]
    COMMANDS[f"{_name} (remembered)"] = [sys.executable, "-m", "mnist_lit", *_args]


def environment(name: str, remembered: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``MNIST_LIT_CACHE_DIR`` for the command ``name``: ``remembered``, or a path no run can write."""
    if name.endswith("(remembered)"):
        return {**env, "MNIST_LIT_CACHE_DIR": str(remembered)}
    return {**env, "MNIST_LIT_CACHE_DIR": str(Path(__file__).resolve() / "not-a-folder")}


def wall_time(command: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of ``command`` (output discarded)."""
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def import_costs(command: list[str], env: dict[str, str], top: int = 12) -> list[tuple[str, float]]:
    """The ``top`` top-level packages by cumulative import time (seconds) in one run of ``command``."""
    proc = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], cwd=REPO, env=env, capture_output=True, text=True
    )
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            name = name.strip()
            if "." not in name and not name.startswith("_"):  # a package's first import (nested ones overlap)
                costs[name] = costs.get(name, 0.0) + int(cumulative) / 1e6
    return sorted(costs.items(), key=lambda item: -item[1])[:top]


def main() -> None:
    """Measure and print; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds of every command (default 7)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    remembered = Path(tempfile.mkdtemp(prefix="mnist_lit_options_"))
    for command in PARSER_ANSWERS.values():  # the first run of each saves the options and fit's help text
        subprocess.run(
            [sys.executable, "-m", "mnist_lit", *command],
            cwd=REPO,
            env=environment("(remembered)", remembered, env),
            capture_output=True,
        )
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(wall_time(command, environment(name, remembered, env)))
    shutil.rmtree(remembered)
    base = statistics.median(times["import torch"])
    print(f"{'command':<44} {'median s':>9} {'x import torch':>15} {'- import torch':>15}   (all runs, s)")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<44} {median:9.3f} {median / base:15.2f} {median - base:+15.2f}   "
            f"({' '.join(f'{v:.2f}' for v in values)})"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("largest package imports of fit --help (cumulative s, one run; a package's time includes those it imports):")
    for name, seconds in import_costs(COMMANDS["fit --help (first)"], environment("(first)", remembered, env)):
        print(f"  {name:<30} {seconds:6.2f}")


if __name__ == "__main__":
    main()
