"""GPU check: the tutorial's recipe on one GPU (fp32 and bf16-mixed), prediction throughput, DDP on 2+ GPUs.

Ready for the day a machine with a GPU is at hand; under 5 minutes there. Each fit is ``python -m mnist_lit
fit --config configs/mnist.yaml`` in a new process, as users run it, with the data on the device
(``--data.data_on_device true``: uint8 images moved to the GPU once, batches cut there). It prints the
figures as a Markdown table in the README's format, and one JSON line with the raw numbers.

    python benchmarks/gpu_check.py                              # on the GPU machine: 5 epochs each
    python benchmarks/gpu_check.py --data_dir /path/to/mnist    # the full 60,000 + 10,000 images

Without a GPU the same script runs on the CPU (its test does, with ``--epochs 2`` and small
``--limit_*_batches``);
``--ddp_devices 2`` there runs the DDP step as two CPU processes (gloo). Measured per fit: the process's wall
time (start-up, data reading and the final test included), the epoch time (median over the epochs after the
first, from the wall-clock stamps of the ``val_acc`` events TensorBoard logs at each epoch's end) and the
printed test accuracy. Prediction: ``Trainer.predict`` over the 10,000 test images with the first fit's best
checkpoint, the second of two passes timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("MNIST_10K", str(REPO.parent / "shared" / "data" / "mnist-10k"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA, help=f"MNIST root with MNIST/raw (default: {DEFAULT_DATA})")
    parser.add_argument("--epochs", type=int, default=5, help="Epochs per fit (default: 5, the recipe's).")
    parser.add_argument("--limit_train_batches", type=float, default=None, help="Passed to every fit (CPU test).")
    parser.add_argument("--limit_val_batches", type=float, default=None, help="Passed to every fit (CPU test).")
    parser.add_argument(
        "--limit_test_batches",
        type=float,
        default=None,
        help="Passed to every fit and to the prediction pass (CPU test).",
    )
    parser.add_argument(
        "--ddp_devices",
        type=int,
        default=None,
        help="Processes of the DDP fit (default: the number of GPUs when 2 or more, else none).",
    )
    parser.add_argument("--work_dir", default=None, help="Where the fits write lightning_logs (default: a temp dir).")
    return parser.parse_args(argv)


def device_summary() -> tuple[str, int, str]:
    """(accelerator flag, number of GPUs, one-line description of the machine)."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return (
            "gpu",
            count,
            (f"{torch.cuda.get_device_name(0)} x {count}, torch {torch.__version__}, CUDA {torch.version.cuda}"),
        )
    return (
        "cpu",
        0,
        f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}",
    )


def epoch_seconds(run_dir: Path) -> list[float]:
    """Wall-clock seconds between the ``val_acc`` events of consecutive epochs (TensorBoard's own stamps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    stamps = [event.wall_time for event in events.Scalars("val_acc")]
    return [b - a for a, b in itertools.pairwise(stamps)]


def run_fit(args: argparse.Namespace, work: Path, name: str, accelerator: str, extra: list[str]) -> dict:
    """One ``fit`` in a new process into ``work/name``; returns wall seconds, epoch seconds, test_acc, best ckpt."""
    flags = [
        "--config",
        str(REPO / "configs" / "mnist.yaml"),
        "--data.data_dir",
        args.data_dir,
        "--data.download",
        "false",
        "--data.data_on_device",
        "true",
        "--trainer.accelerator",
        accelerator,
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(work),
        "--trainer.logger.init_args.name",
        name,
        *extra,
    ]
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if getattr(args, key) is not None:
            flags += [f"--trainer.{key}", str(getattr(args, key))]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_lit", "fit", *flags], cwd=work, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: fit {name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("Test accuracy:"))
    run_dir = max((work / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    epochs = epoch_seconds(run_dir)
    return {
        "wall_s": wall,
        "epoch_s": statistics.median(epochs) if epochs else None,
        "epochs_timed": len(epochs),
        "test_acc": float(line.split()[2]),
        "best_ckpt": line.rsplit(", ", 1)[-1].rstrip(")"),
    }


def predict_throughput(args: argparse.Namespace, accelerator: str, ckpt: str) -> float:
    """Test-set images per second of ``Trainer.predict`` (second of two passes), the checkpoint's model
    (``--limit_test_batches`` limits the batches of 1,000 images)."""
    import logging
    import warnings

    from lightning.pytorch import Trainer

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..." and the like
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

    from mnist_lit.data import MNISTDataModule
    from mnist_lit.model import MNISTClassifier

    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    datamodule = MNISTDataModule(data_dir=args.data_dir, download=False, batch_size=1000, data_on_device=True)
    trainer = Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_predict_batches=args.limit_test_batches,
    )
    trainer.predict(model, datamodule=datamodule)  # warm-up: CUDA kernels, data on the device
    start = time.perf_counter()
    predictions = trainer.predict(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    return sum(len(p["preds"]) for p in predictions) / seconds


def table(summary: str, results: dict) -> str:
    rows = [("device", summary)]
    for key, label in (("fp32", "fp32"), ("bf16", "bf16-mixed"), ("ddp", "DDP")):
        if key in results:
            r = results[key]
            epoch = f"{r['epoch_s']:.2f} s" if r["epoch_s"] is not None else "n/a (1 epoch)"
            rows.append(
                (
                    f"{results['epochs']}-epoch fit, {label}{r.get('label', '')}: process wall / epoch "
                    f"(median of {r['epochs_timed']}) / test_acc",
                    f"{r['wall_s']:.1f} s / {epoch} / {r['test_acc']:.4f}",
                )
            )
    if "predict_images_per_s" in results:
        rows.append(
            ("test-set prediction (`Trainer.predict`, batch 1000)", f"{results['predict_images_per_s']:,.0f} images/s")
        )
    if "ddp_skipped" in results:
        rows.append(("DDP fit", results["ddp_skipped"]))
    return "\n".join(["| measure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    accelerator, gpus, summary = device_summary()
    ddp = args.ddp_devices if args.ddp_devices is not None else (gpus if gpus >= 2 else 0)
    print(f"gpu_check: {summary}; {args.epochs} epochs per fit; data {args.data_dir}", flush=True)
    results: dict = {"epochs": args.epochs, "device": summary}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        results["fp32"] = run_fit(args, work, "fp32", accelerator, ["--trainer.devices", "1"])
        print(f"fp32: {results['fp32']}", flush=True)
        results["bf16"] = run_fit(
            args, work, "bf16", accelerator, ["--trainer.devices", "1", "--trainer.precision", "bf16-mixed"]
        )
        print(f"bf16-mixed: {results['bf16']}", flush=True)
        results["predict_images_per_s"] = predict_throughput(args, accelerator, results["fp32"]["best_ckpt"])
        if ddp >= 2:
            batch = 128 // ddp * ddp  # the global batch must split evenly over the processes
            results["ddp"] = run_fit(
                args,
                work,
                "ddp",
                accelerator,
                [
                    "--config",
                    str(REPO / "configs" / "ddp.yaml"),
                    "--trainer.accelerator",
                    accelerator,
                    "--trainer.devices",
                    str(ddp),
                    "--data.batch_size",
                    str(batch),
                ],
            )
            results["ddp"]["label"] = f" on {ddp} {'GPUs' if accelerator == 'gpu' else 'CPU processes'}, batch {batch}"
        else:
            results["ddp_skipped"] = f"skipped: needs 2 GPUs, found {gpus}"
    for key in ("fp32", "bf16", "ddp"):
        results.get(key, {}).pop("best_ckpt", None)
    print("\n" + table(summary, results) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
