"""The acceptance table of issue 17: realistic phone photos made from real MNIST test digits (tests/photos.py).

    python benchmarks/accuracy_photos.py --ckpt_path CKPT --per_kind 100 --numbers 100 --no_digits 100

Writes ``per_kind`` photos of each kind (paper on a table, shadow, tilt, ruled, squared, pencil, ballpoint,
white ink on a transparent PNG) from the first test digits, photos of 3-5 digit numbers and pictures with no
digit into a temporary folder, reads them with ``mnist_lit.pictures`` and the checkpoint's model, and prints
accuracy per kind against the untouched digits, the exact-read rate of numbers, the refusal rate of no-digit
pictures and the false-refusal rate on the untouched test digits (``--refusal_digits`` of them).
``--seed`` picks other photos (the pipeline was developed on seed 1 and other digits; report seed 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import torch
from photos import DIGIT_KINDS, measure

from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument(
        "--data_dir", default=os.environ.get("MNIST_10K", str(REPO.parent / "shared" / "data" / "mnist-10k"))
    )
    parser.add_argument("--per_kind", type=int, default=100)
    parser.add_argument("--numbers", type=int, default=100)
    parser.add_argument("--no_digits", type=int, default=100)
    parser.add_argument("--refusal_digits", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors; more threads only contend
    images, labels = load_split(args.data_dir, "test")
    model, _ = load_model(args.ckpt_path)
    with tempfile.TemporaryDirectory() as folder:
        r = measure(
            model.probabilities,
            images.numpy(),
            labels.numpy(),
            Path(folder),
            args.seed,
            args.per_kind,
            args.numbers,
            args.no_digits,
            args.refusal_digits,
        )
    print(f"checkpoint {args.ckpt_path}, seed {args.seed}, {args.per_kind} photos per kind")
    print(
        f"| input | accuracy | x originals |\n|---|---|---|\n| untouched 28x28 originals | {r['originals']:.3f} | 1.000 |"
    )
    for kind, what in DIGIT_KINDS.items():
        print(f"| {kind}: {what} | {r[kind]:.3f} | {r[kind] / r['originals']:.3f} |")
    print(f"| numbers of 3-5 digits read exactly ({args.numbers}) | {r['numbers']:.3f} | |")
    print(f"| no-digit pictures refused ({args.no_digits}) | {r['no_digit_refused']:.3f} | |")
    print(f"| untouched test digits wrongly refused ({args.refusal_digits}) | {r['false_refusal']:.4f} | |")
    print(f"| single-digit photos refused (all kinds) | {r['false_refusal_photos']:.4f} | |")


if __name__ == "__main__":
    main()
