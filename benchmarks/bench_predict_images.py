"""Benchmark: predict on 1,000 picture files on CPU, through the same DataModule and Trainer as the CLI.

Writes 1,000 user-style pictures made from real MNIST test digits (a quarter of each kind in
tests/user_pictures.py: 480x360 JPEG photos of ink on paper, 200x200 RGBA PNG drawings, 480x360
EXIF-rotated JPEGs, 150x150 16-bit PNG scans; with ``--photos`` an eighth of each kind of
tests/photos.py instead: 640x480 phone photos of paper on a table, shadows, tilt, ruled and squared
paper, pencil, ballpoint, and white-ink PNGs) into a temporary folder, loads the model, then times
``Trainer.predict`` over the folder (``PicturesDataModule(predict_path=...)``: listing, decoding,
preprocessing, batching, the network) and prints images/s after model load. Not a test: run it by
hand on an otherwise idle machine.

    python benchmarks/bench_predict_images.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt

Without ``--ckpt_path`` a freshly initialised network is used (same speed, meaningless predictions).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the picture builders shared with tests/test_images.py

import torch
from lightning.pytorch import Trainer
from photos import DIGIT_KINDS, write_digit_set
from user_pictures import KINDS, write_pictures

from mnist_lit.data import load_split
from mnist_lit.model import MNISTClassifier
from mnist_lit.pictures import read_picture
from mnist_lit.pictures.datamodule import PicturesDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", default=None, help="checkpoint to load (default: untrained network)")
    parser.add_argument(
        "--data_dir",
        default=os.environ.get("MNIST_10K", str(REPO.parent / "shared" / "data" / "mnist-10k")),
        help="MNIST root holding MNIST/raw/t10k-*.gz (the digits drawn into the pictures)",
    )
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument(
        "--num_workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time, one run each"
    )
    parser.add_argument(
        "--photos",
        action="store_true",
        help="640x480 phone photos of tests/photos.py (paper on a table, shadows, tilt, ruled paper, ...) "
        "instead of the simple kinds of tests/user_pictures.py",
    )
    args = parser.parse_args()

    images, _ = load_split(args.data_dir, "test")
    with tempfile.TemporaryDirectory() as folder:
        kinds = list(DIGIT_KINDS) if args.photos else KINDS
        per_kind = -(-args.num_images // len(kinds))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # building the pictures: small tensors, threads only contend
        for k, kind in enumerate(kinds):
            count = min(per_kind, args.num_images - k * per_kind)
            chosen = images[k * per_kind : k * per_kind + count]
            if args.photos:
                write_digit_set(chosen.numpy(), kind, Path(folder), seed=k)
            else:
                write_pictures(chosen, Path(folder), kind, seed=k)
        torch.set_num_threads(threads)
        files = sorted(Path(folder).iterdir())
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(
            f"{len(files)} pictures, {size_mb:.1f} MB, in {folder}; torch threads {torch.get_num_threads()}, "
            f"CPU cores {os.cpu_count()}"
        )

        start, cpu_start = time.perf_counter(), time.process_time()
        for file in files[:200]:
            read_picture(file)
        per_image, cpu_per_image = (time.perf_counter() - start) / 200, (time.process_time() - cpu_start) / 200
        print(
            f"read_picture alone, one process: {1 / per_image:.0f} images/s ({1000 * per_image:.2f} ms "
            f"each; {1000 * cpu_per_image:.2f} ms of CPU time each, so about {1 / cpu_per_image:.0f} images/s "
            "per core that is not shared)"
        )

        start = time.perf_counter()
        model = (
            MNISTClassifier.load_from_checkpoint(args.ckpt_path, map_location="cpu")
            if args.ckpt_path
            else MNISTClassifier()
        )
        print(f"model load: {time.perf_counter() - start:.2f} s")
        for num_workers in args.num_workers:
            datamodule = PicturesDataModule(predict_path=folder, batch_size=args.batch_size, num_workers=num_workers)
            trainer = Trainer(
                accelerator="cpu",
                devices=1,
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
            )
            start = time.perf_counter()
            batches = trainer.predict(model, datamodule=datamodule)
            elapsed = time.perf_counter() - start
            predicted = len(datamodule.data_predict)
            assert sum(len(batch["preds"]) for batch in batches) <= 12 * predicted
            print(
                f"Trainer.predict, num_workers={num_workers}, batch_size={args.batch_size}: {predicted} images in "
                f"{elapsed:.2f} s = {predicted / elapsed:.0f} images/s (after model load)"
            )


if __name__ == "__main__":
    main()
