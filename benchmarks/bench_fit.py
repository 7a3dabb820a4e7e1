"""Whole-process ``fit`` as users time it: float32 (configs/mnist.yaml) vs bfloat16 (configs/fast.yaml) vs Keras.

    python benchmarks/bench_fit.py [--data-dir ../shared/data/mnist-10k] [--repeats 3] [--skip-keras]

Each turn runs, one after the other and in a rotating order, ``python -m mnist_lit fit --config
configs/mnist.yaml``, the same with ``configs/fast.yaml`` (``trainer.precision: bf16-mixed``, no TensorBoard
images or graph), configs/mnist.yaml with ``--trainer.precision bf16-mixed`` (the precision's own share) and the
tutorial's recipe in Keras on TensorFlow (benchmarks/keras_recipe.py, as bench_training.py runs it:
load the arrays, fit with validation, evaluate, then the tutorial's last step: predict the first test digit
and plot it with matplotlib, as issue 20's baseline "fit + evaluate + predict" has it), each a new process timed
from start to exit. Prints
the median wall time of each, the ratios (targets of issue 20: fit <= 0.90 x Keras in float32,
<= 0.70 x with bf16 where the CPU has AMX/AVX-512 BF16), each run's test accuracy, the CPU's
instruction sets (bf16 speed depends on them) and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_training import bench_keras, keras_python
from flops import first_cpu_fields

from mnist_lit.data import load_split

#: The /proc/cpuinfo flags that decide how bfloat16 runs on a CPU (without them PyTorch emulates it).
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx2", "fma")


def cpu_description() -> str:
    """CPU model, torch's vector capability and which of :data:`BF16_FLAGS` /proc/cpuinfo lists."""
    fields = first_cpu_fields()
    model = platform.processor() or "?"
    model = fields.get("model name", model) if model in ("?", "x86_64", "") else model
    flags = set(fields.get("flags", "").split())
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in BF16_FLAGS)
    return (
        f"CPU: {model}, {os.cpu_count()} CPUs; torch.backends.cpu.get_cpu_capability(): "
        f"{torch.backends.cpu.get_cpu_capability()}; /proc/cpuinfo: {present}"
    )


def run_fit(config: Path, data_dir: str, workdir: Path, *flags: str) -> dict:
    """One ``python -m mnist_lit fit --config CONFIG [FLAGS]`` in a new process in ``workdir``: wall seconds and
    test_acc."""
    workdir.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "mnist_lit",
        "fit",
        "--config",
        str(config),
        "--data.data_dir",
        data_dir,
        "--data.download",
        "false",
        *flags,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    out = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    found = re.search(r"^Test accuracy: ([0-9.]+)", out.stdout, re.MULTILINE)
    return {"seconds": seconds, "test_acc": float(found.group(1))}


def main() -> None:
    """Measure and print; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"))
    parser.add_argument("--repeats", type=int, default=3, help="turns of every run (default 3)")
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument("--keras-python", help="interpreter with TensorFlow (default: this one)")
    args = parser.parse_args()
    args.epochs = 5  # configs/mnist.yaml's, for the Keras run
    data_dir = str(Path(args.data_dir).resolve())
    print(cpu_description())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runners = {
            "fit fp32 (configs/mnist.yaml)": lambda i: run_fit(
                REPO / "configs" / "mnist.yaml", data_dir, work / f"fp32_{i}"
            ),
            "fit bf16 (configs/fast.yaml)": lambda i: run_fit(
                REPO / "configs" / "fast.yaml", data_dir, work / f"bf16_{i}"
            ),
            # the precision's own share: configs/mnist.yaml, every output kept, in bf16
            "fit bf16, every output": lambda i: run_fit(
                REPO / "configs" / "mnist.yaml", data_dir, work / f"bf16_all_{i}", "--trainer.precision", "bf16-mixed"
            ),
        }
        python = None if args.skip_keras else keras_python(args, parser)
        if python:
            images, labels = load_split(data_dir, "train")
            test_images, test_labels = load_split(data_dir, "test")
            npz = work / "data.npz"
            np.savez_compressed(
                npz,
                x_train=images[:, 0].numpy(),
                y_train=labels.numpy(),
                x_test=test_images[:, 0].numpy(),
                y_test=test_labels.numpy(),
            )

            def keras(i: int) -> dict:
                start = time.perf_counter()
                result = bench_keras(args, python, npz)
                return {"seconds": time.perf_counter() - start, "test_acc": result["test_acc"]}

            runners["Keras/TF (keras_recipe.py)"] = keras
        runs: dict[str, list[dict]] = {name: [] for name in runners}
        for turn in range(args.repeats):
            names = list(runners)[turn % len(runners) :] + list(runners)[: turn % len(runners)]
            for name in names:
                runs[name].append(runners[name](turn))
                print(
                    f"  turn {turn}: {name}: {runs[name][-1]['seconds']:.2f} s, "
                    f"test_acc {runs[name][-1]['test_acc']:.4f}",
                    flush=True,
                )
    median = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    print(f"\n{'whole process, from start to exit':<34} {'median s':>9}   test_acc of each run")
    for name, results in runs.items():
        print(f"{name:<34} {median[name]:9.2f}   {' '.join(format(r['test_acc'], '.4f') for r in results)}")
    fp32, bf16 = median["fit fp32 (configs/mnist.yaml)"], median["fit bf16 (configs/fast.yaml)"]
    print(f"ratio bf16 / fp32: {bf16 / fp32:.3f} (fast.yaml: bf16 and no TensorBoard images or graph)")
    print(f"ratio bf16 with every output / fp32: {median['fit bf16, every output'] / fp32:.3f} (the precision alone)")
    if python:
        keras_s = median["Keras/TF (keras_recipe.py)"]
        print(f"ratio fp32 / Keras: {fp32 / keras_s:.3f} (target <= 0.90)")
        print(f"ratio bf16 / Keras: {bf16 / keras_s:.3f} (target <= 0.70 where the CPU has AMX/AVX-512 BF16)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
