"""Accuracy on user-style pictures made from real MNIST test digits, against the untouched 28x28 digits.

The same measurement as tests/test_images.py (which uses 300 digits), on more digits, for the README:

    python benchmarks/accuracy_user_pictures.py --ckpt_path CKPT --num_digits 1000

Takes every ``10000 // num_digits``-th test digit, writes one picture of each kind per digit
(tests/user_pictures.py) into a temporary folder, preprocesses them with
``mnist_lit.pictures.frame.preprocess_image_uint8`` and prints the accuracy per kind and its ratio to the
accuracy on the original digits.
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
from user_pictures import accuracy_by_kind

from mnist_lit.checkpoint import load_model
from mnist_lit.data import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument(
        "--data_dir", default=os.environ.get("MNIST_10K", str(REPO.parent / "shared" / "data" / "mnist-10k"))
    )
    parser.add_argument("--num_digits", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors; more threads only contend
    images, labels = load_split(args.data_dir, "test")
    step = max(1, len(labels) // args.num_digits)
    images, labels = images[::step][: args.num_digits], labels[::step][: args.num_digits]
    model, _ = load_model(args.ckpt_path)
    with tempfile.TemporaryDirectory() as folder:
        accuracy = accuracy_by_kind(model, images, labels, Path(folder))
    print(f"{len(labels)} test digits (every {step}th), checkpoint {args.ckpt_path}")
    print(f"{'input':<20} {'accuracy':>8}  {'x originals':>11}")
    for kind, acc in accuracy.items():
        print(f"{kind:<20} {acc:>8.4f}  {acc / accuracy['originals']:>11.4f}")


if __name__ == "__main__":
    main()
