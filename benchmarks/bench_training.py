"""Speed and memory of mnist_lit, side by side with the alternatives, in one run on one machine.

    python benchmarks/bench_training.py --data-dir ../shared/data/mnist-10k
    python benchmarks/bench_training.py --data-dir /usr/share/datasets/fashion-mnist --dataset fashion_mnist

Measures, on the same data, batch size (128), optimizer and thread count:
  (a) mnist_lit: `fit` as users run it (configs/mnist.yaml: progress bar, TensorBoard logging, callbacks);
  (b) a hand-written PyTorch loop of the same model (the same forward, so the same memory format);
  (b2) the tutorial's own stack, Keras 3 on TensorFlow (CPU), if `pip install -e '.[bench]'` installed it
       (its fit time counts loading the arrays, as mnist_lit's counts reading the files);
  (c) the data path alone: batches/s of the project's train loader vs torchvision's MNIST with ToTensor();
  (d) peak resident memory (RSS) of a `fit` subprocess on the whole data set;
  (e) prediction throughput on the test set (images/s) with `Trainer.predict`;
  (f) distance to the limit: FLOPs per training image (forward + backward, FlopCounterMode), the FLOP/s of
      (a)'s median train epoch, and the CPU's float32 peak (cores x clock x FLOPs/cycle, formula printed).
(a), (b) and (b2) take turns, --repeats times. Prints medians and the ratios the project's targets are stated
in (docs/performance.md), and each turn's ratios: train epoch (a)/(b) and fit (a)/(b2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from flops import flops_per_image, peak_flops

from mnist_lit.allocator import keep_freed_memory
from mnist_lit.cli import build_cli
from mnist_lit.data import (
    DATASETS,
    RAW_FILES,
    MNISTDataModule,
    decode_idx,
    find_raw_file,
    load_split,
    magic_for,
    raw_folder,
    split_indices,
)
from mnist_lit.errors import DataError
from mnist_lit.model import MNISTClassifier, scale_pixels


class EpochTimer(Callback):
    """Seconds of each training epoch (without its validation) and of each whole epoch."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        self.train_done = False

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and not self.train_done:
            self.train_seconds.append(time.perf_counter() - self.start)
            self.train_done = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.start)


def bench_mnist_lit(args, workdir: Path) -> dict:
    """(a) and (e) in a new process each time, as `python -m mnist_lit fit` runs: it pays the once-per-process
    costs (the first self.log, reading the files) every time, as Keras pays its graph tracing every time."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--data-dir",
            args.data_dir,
            "--dataset",
            args.dataset,
            "--epochs",
            str(args.epochs),
            "--worker-dir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(
        next(line for line in reversed(out.stdout.splitlines()) if line.startswith(RESULT))[len(RESULT) :]
    )


RESULT = "bench_training result: "  # the line the worker process prints its JSON on


def mnist_lit_worker(args) -> None:
    """The worker process of :func:`bench_mnist_lit`: `fit` as configs/mnist.yaml runs it, then predict."""
    workdir = Path(args.worker_dir)
    timer = EpochTimer()
    cli = build_cli(
        [
            "--config",
            str(REPO / "configs" / "mnist.yaml"),
            "--data.data_dir",
            args.data_dir,
            "--data.dataset",
            args.dataset,
            "--data.download",
            "false",
            "--trainer.max_epochs",
            str(args.epochs),
            "--trainer.default_root_dir",
            str(workdir),
            "--trainer.logger.init_args.save_dir",
            str(workdir),
        ],
        run=False,
        callbacks=[timer],
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    test_acc = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test_acc"]
    predictor = Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu")
    dm = MNISTDataModule(data_dir=args.data_dir, dataset=args.dataset, download=False, batch_size=1000)
    predictor.predict(cli.model, datamodule=dm)  # warm-up
    start = time.perf_counter()
    predictions = predictor.predict(cli.model, datamodule=dm)
    predict_seconds = time.perf_counter() - start
    n_test = sum(len(p["preds"]) for p in predictions)
    print(
        RESULT
        + json.dumps(
            {
                "train_seconds": timer.train_seconds,
                "epoch_seconds": timer.epoch_seconds,
                "fit_seconds": fit_seconds,
                "test_acc": test_acc,
                "predict_images_per_s": n_test / predict_seconds,
            }
        )
    )


def count_correct(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> int:
    """Images of uint8 (N, 1, 28, 28) that ``model`` classifies right, in eval mode without autograd."""
    model.eval()
    with torch.inference_mode():
        return sum(
            int((model(x).argmax(1) == y).sum())
            for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=False)
        )


def bench_hand_loop(args, images, labels, test_images, test_labels) -> dict:
    """(b) The plain PyTorch loop: the same model, RMSprop, batch 128, shuffle each epoch, validation pass."""
    torch.manual_seed(0)
    train_idx, val_idx = split_indices(len(labels), 0.3, "tail")  # the configs' holdout: the last 30%
    train_x, train_y, val_x, val_y = images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
    n_train = len(train_idx)
    model = MNISTClassifier()
    optimizer = model.configure_optimizers()
    train_seconds, epoch_seconds = [], []
    fit_start = time.perf_counter()
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(n_train).split(128):
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_seconds.append(time.perf_counter() - start)
        correct = count_correct(model, val_x, val_y, 128)
        epoch_seconds.append(time.perf_counter() - start)
    fit_seconds = time.perf_counter() - fit_start
    test_acc = count_correct(model, test_images, test_labels, 1000) / len(test_labels)
    return {
        "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds,
        "fit_seconds": fit_seconds,
        "val_acc": correct / len(val_y),
        "test_acc": test_acc,
    }


def keras_python(args, parser) -> str | None:
    """The interpreter that runs (b2); None (with a note) when this one, the default, has no TensorFlow.
    An interpreter named with --keras-python that cannot run or import TensorFlow and matplotlib (keras_recipe.py
    plots the digit it predicts, as the tutorial does) stops the benchmark with one line."""
    python = args.keras_python or sys.executable
    try:
        found = subprocess.run([python, "-c", "import tensorflow, matplotlib"], capture_output=True).returncode == 0
    except OSError as err:
        parser.error(
            f"--keras-python {python}: cannot run it ({err.strerror}); give a Python interpreter with TensorFlow"
        )
    if not found and args.keras_python:
        parser.error(
            f"--keras-python {python}: it cannot import tensorflow and matplotlib; give a Python interpreter with "
            "both (e.g. a virtual environment with `pip install tensorflow-cpu matplotlib`), or leave the option out"
        )
    if not found:
        print(
            f"(b2) skipped: no TensorFlow (or matplotlib) for {python} (pip install -e '.[bench]', or --keras-python PYTHON)",
            flush=True,
        )
        return None
    return python


def bench_keras(args, python: str, npz: Path) -> dict:
    """(b2) Keras 3 on TensorFlow in a subprocess (keras_recipe.py) on the arrays saved in ``npz``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run(
        [
            python,
            str(REPO / "benchmarks" / "keras_recipe.py"),
            str(npz),
            str(args.epochs),
            str(torch.get_num_threads()),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_data_path(args, workdir: Path, batches: int = 200) -> dict:
    """(c) batches/s: the project's train loader vs torchvision's MNIST + ToTensor() per sample."""
    from torchvision import transforms

    dm = MNISTDataModule(data_dir=args.data_dir, dataset=args.dataset, download=False)
    dm.setup("fit")

    def rate(loader, scale) -> float:
        start, count = time.perf_counter(), 0
        while count < batches:
            for x, _ in loader:
                x = scale(x)
                count += 1
                if count == batches:
                    break
        return count / (time.perf_counter() - start)

    ours = rate(dm.train_dataloader(), lambda x: scale_pixels(x))  # the scaling the model does on a batch
    # torchvision reads uncompressed files from ROOT/<Name>/raw: give it a decompressed copy.
    tv_raw = workdir / DATASETS[args.dataset].__name__ / "raw"
    tv_raw.mkdir(parents=True)
    for stem in RAW_FILES["train"] + RAW_FILES["test"]:
        source = find_raw_file(raw_folder(args.data_dir, args.dataset), stem)
        (tv_raw / stem).write_bytes(decode_idx(source, source.read_bytes(), magic_for(stem))[1])
    dataset = DATASETS[args.dataset](str(workdir), train=True, transform=transforms.ToTensor())
    theirs = rate(torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True), lambda x: x)
    return {"ours_batches_per_s": ours, "torchvision_batches_per_s": theirs}


def bench_peak_rss(args, workdir: Path) -> float:
    """(d) Peak RSS in MiB of one-epoch `python -m mnist_lit fit` on the whole data set, in a subprocess."""
    command = [
        sys.executable,
        "-m",
        "mnist_lit",
        "fit",
        "--config",
        str(REPO / "configs" / "mnist.yaml"),
        "--data.data_dir",
        str(Path(args.data_dir).resolve()),
        "--data.dataset",
        args.dataset,
        "--data.download",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    with open(workdir / "fit.log", "w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage, not all children's
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, (workdir / "fit.log").read_text())
    return usage.ru_maxrss / 1024  # Linux reports KiB


def merge_runs(runs: list[dict]) -> dict:
    """Pool the per-epoch times of repeated runs; keep the median fit time and the first run's accuracy."""
    merged = dict(runs[0])
    for key in ("train_seconds", "epoch_seconds"):
        if key in merged:
            merged[key] = [t for run in runs for t in run[key]]
    merged["fit_runs"] = [run["fit_seconds"] for run in runs]
    merged["fit_seconds"] = statistics.median(run["fit_seconds"] for run in runs)
    if "fit_only_seconds" in merged:
        merged["fit_only_seconds"] = statistics.median(run["fit_only_seconds"] for run in runs)
    if "predict_images_per_s" in merged:
        merged["predict_images_per_s"] = statistics.median(run["predict_images_per_s"] for run in runs)
    return merged


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cpu_busy_fraction(seconds: float = 2.0) -> float | None:
    """Fraction of all CPUs' time spent busy over the next ``seconds`` (Linux /proc/stat), or None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait (jiffies)

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def warn_if_busy() -> None:
    """Timings from a loaded machine are slow and their ratios noisy: say so next to them."""
    busy = cpu_busy_fraction()
    if busy is not None and busy > 0.2:
        print(
            f"warning: the CPUs were {busy:.0%} busy before the benchmark started (something else is running): "
            "times are slower and ratios noisier than on an idle machine",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"))
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--repeats", type=positive_int, default=5, help="runs of (a), (b) and (b2) each, taking turns")
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument("--keras-python", help="interpreter with TensorFlow for (b2); default: this one")
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)  # internal: run one (a) in this process
    args = parser.parse_args()
    allocator = keep_freed_memory()
    if args.worker_dir:
        return mnist_lit_worker(args)  # with the allocator tuned, as `python -m mnist_lit` runs; (b) in the parent too
    threads = torch.get_num_threads()
    try:
        images, labels = load_split(args.data_dir, "train", args.dataset)
        test_images, test_labels = load_split(args.data_dir, "test", args.dataset)
    except DataError as err:
        parser.error(
            f"--data-dir: {err} (the benchmark does not download: fill the folder once with "
            f"`python -m mnist_lit fit --config configs/mnist.yaml --data.data_dir {args.data_dir} --data.dataset {args.dataset} --data.download true`, "
            "or copy the files there)"
        )
    warn_if_busy()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(
        f"data: {args.dataset} from {args.data_dir}: {len(labels)} training images "
        f"({len(split_indices(len(labels), 0.3, 'tail')[0])} train / the rest val), {len(test_labels)} test; "
        f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, "
        f"glibc malloc tuned for reuse: {allocator}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "rss").mkdir()
        python = None if args.skip_keras else keras_python(args, parser)
        rss_mib = bench_peak_rss(args, work / "rss")
        runners = {
            "hand": lambda repeat: bench_hand_loop(args, images, labels, test_images, test_labels),
            "ours": lambda repeat: bench_mnist_lit(args, work / f"lit{repeat}"),
        }
        if python:
            npz = work / "data.npz"
            np.savez_compressed(
                npz,
                x_train=images[:, 0].numpy(),
                y_train=labels.numpy(),
                x_test=test_images[:, 0].numpy(),
                y_test=test_labels.numpy(),
            )
            runners["keras"] = lambda repeat: bench_keras(args, python, npz)
        # (a), (b) and (b2) take turns, each repeat starting one later, so a busy moment of the machine
        # (run-to-run noise here is +-10%) does not favour one of them.
        runs: dict[str, list[dict]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            names = list(runners)[repeat % len(runners) :] + list(runners)[: repeat % len(runners)]
            for name in names:
                runs[name].append(runners[name](repeat))
        hand, ours = (merge_runs(runs[name]) for name in ("hand", "ours"))
        # Each turn's ratio of median train epochs: (a) and (b) of one turn ran within minutes of each other.
        ours["turn_train_ratios"] = [
            statistics.median(a["train_seconds"]) / statistics.median(b["train_seconds"])
            for a, b in zip(runs["ours"], runs["hand"], strict=False)
        ]
        keras = merge_runs(runs["keras"]) if python else None
        if keras:  # the same turn: both ran within a minute or two of each other
            keras["turn_fit_ratios"] = [
                a["fit_seconds"] / b["fit_seconds"] for a, b in zip(runs["ours"], runs["keras"], strict=False)
            ]
        data = bench_data_path(args, work / "tv")

    med = statistics.median
    n_train = len(split_indices(len(labels), 0.3, "tail")[0])
    per_image, peak = flops_per_image()["total"], peak_flops(threads)
    achieved = per_image * n_train / med(ours["train_seconds"])
    rows = [
        ("(a) mnist_lit train epoch, median s", med(ours["train_seconds"])),
        ("(b) hand-written loop train epoch, median s", med(hand["train_seconds"])),
        ("    ratio (a)/(b), target <= 1.10", med(ours["train_seconds"]) / med(hand["train_seconds"])),
        ("    median of the turns' ratios (a)/(b)", med(ours["turn_train_ratios"])),
        ("(a) mnist_lit epoch with validation, median s", med(ours["epoch_seconds"])),
        ("(b) hand-written epoch with validation, median s", med(hand["epoch_seconds"])),
        ("    ratio (a)/(b)", med(ours["epoch_seconds"]) / med(hand["epoch_seconds"])),
        (f"(a) mnist_lit {args.epochs}-epoch fit with validation, median s", ours["fit_seconds"]),
        (f"(b) hand-written {args.epochs}-epoch fit with validation, median s", hand["fit_seconds"]),
    ]
    if keras:
        rows += [
            (
                f"(b2) Keras {keras['keras']} / TF {keras['tensorflow']} {args.epochs}-epoch fit, median s",
                keras["fit_seconds"],
            ),
            ("     of which model.fit alone, median s", keras["fit_only_seconds"]),
            ("    ratio (a)/(b2) fit, target <= 1.00", ours["fit_seconds"] / keras["fit_seconds"]),
            ("    median of the turns' ratios (a)/(b2)", statistics.median(keras["turn_fit_ratios"])),
        ]
    rows += [
        ("(c) project train loader, batches/s", data["ours_batches_per_s"]),
        ("(c) torchvision MNIST + ToTensor(), batches/s", data["torchvision_batches_per_s"]),
        ("    ratio, target >= 10", data["ours_batches_per_s"] / data["torchvision_batches_per_s"]),
        ("(d) peak RSS of a 1-epoch fit, MiB (target <= 2048)", rss_mib),
        ("(e) predict on the test set, images/s (target >= 5000)", ours["predict_images_per_s"]),
        ("(f) FLOPs per training image, forward + backward, millions", per_image / 1e6),
        (f"(f) achieved in (a)'s train epoch ({n_train} images), GFLOP/s", achieved / 1e9),
        ("(f) float32 peak, GFLOP/s (formula below)", peak["peak"] / 1e9),
        ("    achieved / peak, %", 100 * achieved / peak["peak"] if peak["peak"] else float("nan")),
        ("test_acc mnist_lit", ours["test_acc"]),
        ("test_acc hand-written loop", hand["test_acc"]),
    ]
    if keras:
        rows.append(("test_acc Keras/TensorFlow", keras["test_acc"]))
    print()
    for name, value in rows:
        print(f"{name:<62} {value:10.3f}")
    print(f"(f) peak: {peak['formula']}; clock from {peak['clock_source']}; CPU capability {peak['capability']}")
    print("train epoch (a)/(b) in each turn: " + ", ".join(f"{r:.2f}" for r in ours["turn_train_ratios"]))
    if keras:
        print("fit (a)/(b2) in each turn: " + ", ".join(f"{r:.2f}" for r in keras["turn_fit_ratios"]))
    print(json.dumps({"ours": ours, "hand": hand, "keras": keras, "data": data, "rss_mib": rss_mib}))


if __name__ == "__main__":
    main()
