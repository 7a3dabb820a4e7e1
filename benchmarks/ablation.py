"""Run `fit` for several seeds and record validation and test accuracy with the CPU time of each run.

The measurements behind docs/best.md (the ablation from the tutorial's recipe to configs/best.yaml):

    python benchmarks/ablation.py run --step recipe --seeds 0 1 2 --out benchmarks/results/ablation.jsonl \\
        -- --config configs/mnist.yaml
    python benchmarks/ablation.py summary benchmarks/results/ablation.jsonl

``run`` starts ``python -m mnist_lit fit FIT_FLAGS --seed_everything S`` once per seed in its own folder under
``--work_dir`` (kept: its checkpoints are used afterwards), on ``--data_dir``, and appends one JSON line per run to
``--out``: the step, seed, ``val_acc`` of the checkpoint ``fit`` tested (the best by ``val_acc``, read from its
file name), the printed ``test_acc``, the child's CPU time (user + system, from ``os.wait4``), wall time, the
load average when it ended, ``OMP_NUM_THREADS``, the git commit and the full command. ``summary`` prints mean ±
sample std per step as a Markdown table, in the order the steps first appear.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("MNIST_10K", str(REPO.parent / "shared" / "data" / "mnist-10k"))
TEST_LINE = re.compile(r"^Test accuracy: ([0-9.]+) \(test_loss ([0-9.]+), (.*)\)$", re.MULTILINE)
VAL_ACC = re.compile(r"val_acc([0-9]+\.[0-9]+)")


def run_one(step: str, seed: int, fit_flags: list[str], work_dir: Path, data_dir: str) -> dict:
    """One ``fit`` in ``work_dir/STEP/seedS``; returns its record (raises if it fails)."""
    folder = work_dir / step / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mnist_lit",
        "fit",
        *fit_flags,
        "--seed_everything",
        str(seed),
        "--data.data_dir",
        data_dir,
        "--data.download",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(folder / "fit.log", "w") as log:
        proc = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    output = (folder / "fit.log").read_text()
    found = TEST_LINE.search(output)
    if os.waitstatus_to_exitcode(status) != 0 or found is None:
        raise SystemExit(
            f"error: {step} seed {seed} failed (exit {os.waitstatus_to_exitcode(status)}); see {folder / 'fit.log'}"
        )
    ckpt = found.group(3)
    val = VAL_ACC.search(Path(ckpt).name)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "step": step,
        "seed": seed,
        "val_acc": float(val.group(1)) if val else None,
        "test_acc": float(found.group(1)),
        "test_loss": float(found.group(2)),
        "ckpt": str((folder / ckpt).resolve()),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_s": round(wall, 1),
        "load_avg_1min": os.getloadavg()[0],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "commit": commit,
        "command": " ".join(["python -m mnist_lit fit", *fit_flags, "--seed_everything", str(seed)]),
    }


def summary(path: Path) -> str:
    """Markdown table: step, runs, val_acc and test_acc mean ± std, CPU seconds per run (mean)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps: dict[str, list[dict]] = {}
    for record in records:
        steps.setdefault(record["step"], []).append(record)

    def mean_std(values: list[float], digits: int = 4) -> str:
        if len(values) < 2:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    lines = ["| step | seeds | val_acc | test_acc | CPU s per run |", "|---|---|---|---|---|"]
    for step, runs in steps.items():
        lines.append(
            f"| {step} | {','.join(str(r['seed']) for r in runs)} | {mean_std([r['val_acc'] for r in runs])} | "
            f"{mean_std([r['test_acc'] for r in runs])} | {statistics.mean(r['cpu_s'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="fit once per seed and append the records")
    run.add_argument("--step", required=True, help="name of the ablation step")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--out", type=Path, required=True, help="JSON-lines file the records are appended to")
    run.add_argument("--work_dir", type=Path, default=Path("ablation_runs"))
    run.add_argument("--data_dir", default=DATA)
    run.add_argument("fit_flags", nargs=argparse.REMAINDER, help="-- then the fit flags")
    show = commands.add_parser("summary", help="print the table of a records file")
    show.add_argument("records", type=Path)
    args = parser.parse_args()
    if args.command == "summary":
        print(summary(args.records))
        return
    flags = args.fit_flags[1:] if args.fit_flags[:1] == ["--"] else args.fit_flags
    for seed in args.seeds:
        record = run_one(args.step, seed, flags, args.work_dir.resolve(), args.data_dir)
        with open(args.out, "a") as out:
            out.write(json.dumps(record) + "\n")
        print(
            f"{args.step} seed {seed}: val_acc {record['val_acc']} test_acc {record['test_acc']} "
            f"cpu {record['cpu_s']} s wall {record['wall_s']} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
