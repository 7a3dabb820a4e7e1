"""Train the "digit or not" network (:mod:`mnist_lit.pictures.digitness`) and print its calibration.

    python -m mnist_lit.pictures.train_digitness --data_dir ../shared/data/mnist-10k --out mnist_lit/pictures/digitness.pt

Deterministic for a given ``--seed`` on one CPU thread (a few minutes). Positives: the first ``--train_digits``
MNIST training digits, as they are and cut out again from photo size (:func:`~mnist_lit.pictures.glyphs.mnist_crops`),
and digits printed in the system's fonts; negatives: letters printed in the same fonts
(:data:`~mnist_lit.pictures.glyphs.LETTERS`, single and in pairs). The training digits after ``--train_digits``
(configs/mnist.yaml's validation digits) are not trained on: the printed quantiles of their P(digit), as they are
and cut out again, are what :data:`~mnist_lit.pictures.digitness.MIN_DIGITNESS` was chosen from.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from mnist_lit.data import load_split
from mnist_lit.pictures.digitness import MIN_DIGITNESS, DigitnessNet, digit_probability
from mnist_lit.pictures.glyphs import DIGITS, LETTERS, font_files, glyph_crops, mnist_crops


def training_set(
    digits: np.ndarray, letters: int, printed: int, copies: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 1, 28, 28) crops and float32 (N,) targets (1 digit, 0 letter), in a seeded random order: the
    ``digits`` as they are and ``copies`` times cut out again, ``printed`` printed digits, ``letters`` letters."""
    rng = np.random.default_rng(seed)
    fonts = font_files()
    if not fonts:
        raise SystemExit("no TrueType fonts under /usr/share/fonts/truetype/{dejavu,liberation}: install fonts-dejavu")
    positives = [torch.from_numpy(digits.copy())] + [mnist_crops(digits, rng) for _ in range(copies)]
    positives.append(glyph_crops(DIGITS, printed, fonts, rng))
    negatives = glyph_crops(LETTERS, letters, fonts, rng, pairs=0.15)
    pixels = torch.cat([*positives, negatives]).unsqueeze(1)
    targets = torch.cat([torch.ones(sum(len(p) for p in positives)), torch.zeros(len(negatives))])
    order = torch.from_numpy(rng.permutation(len(pixels)))
    return pixels[order], targets[order]


def train(pixels: torch.Tensor, targets: torch.Tensor, epochs: int, seed: int) -> DigitnessNet:
    """Adam (lr 2e-3, cosine decay), batches of 128, binary cross-entropy; the classes weighted to equal mass."""
    torch.manual_seed(seed)
    model = DigitnessNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(pixels) + 127) // 128)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    share = float(targets.mean())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - share) / share))
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(pixels), generator=generator)
        total = 0.0
        for start in range(0, len(pixels), 128):
            batch = order[start : start + 128]
            loss = loss_fn(model(pixels[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(pixels):.4f}", flush=True)
    return model.eval()


#: The calibration's rule: the largest threshold of the form 1 or 3 x 10^-k (k = 1 ... 8) under which at most this
#: share of the held-out validation digits falls, as they are and cut out again.
CALIBRATION_SHARE = 0.002


def calibrate(digitness: list[torch.Tensor]) -> float:
    """The threshold the :data:`CALIBRATION_SHARE` rule picks for real digits' P(digit) (float32 (N,) each)."""
    candidates = sorted((float(f"{m}e-{k}") for k in range(1, 9) for m in (1, 3)), reverse=True)
    return next(
        (t for t in candidates if all(float((p < t).double().mean()) <= CALIBRATION_SHARE for p in digitness)),
        0.0,
    )


def report(model: DigitnessNet, held_out: np.ndarray, seed: int) -> None:
    """Print P(digit) quantiles of held-out real digits (as they are, and cut out again) and the share of
    held-out printed letters and digits (fresh draws) under :data:`MIN_DIGITNESS`."""
    rng = np.random.default_rng(seed + 1)
    fonts = font_files()
    sets = {
        "validation digits as they are": torch.from_numpy(held_out.copy()),
        "validation digits cut out again": mnist_crops(held_out, rng),
        "printed digits (fresh)": glyph_crops(DIGITS, 2000, fonts, rng),
        "printed letters (fresh)": glyph_crops(LETTERS, 4000, fonts, rng, pairs=0.15),
    }
    scores = {name: digit_probability(crops.unsqueeze(1), model).double() for name, crops in sets.items()}
    print(f"calibrated threshold: {calibrate(list(scores.values())[:2])} (MIN_DIGITNESS is {MIN_DIGITNESS})")
    for name, p in scores.items():
        q = [float(torch.quantile(p, f)) for f in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.5, 0.9, 0.95)]
        under = float((p < MIN_DIGITNESS).double().mean())
        print(
            f"{name} ({len(p)}): quantiles 0.05/0.1/0.2/0.5/1/50/90/95% {[f'{v:.1e}' for v in q]}, under {MIN_DIGITNESS}: {under:.4f}"
        )


def main() -> None:
    """Parse the command line, build the training set, train, write the weights (a state_dict) and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/mnist-10k")
    parser.add_argument("--out", default="digitness.pt")
    parser.add_argument("--train_digits", type=int, default=7000)
    parser.add_argument("--letters", type=int, default=36000)
    parser.add_argument("--printed_digits", type=int, default=6000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_split(args.data_dir, "train", notice=False)[0].numpy()[:, 0]
    pixels, targets = training_set(
        images[: args.train_digits], args.letters, args.printed_digits, args.copies, args.seed
    )
    print(f"{len(pixels)} crops, {int(targets.sum())} digits", flush=True)
    model = train(pixels, targets, args.epochs, args.seed)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters())} parameters)")
    report(model, images[args.train_digits :], args.seed)


if __name__ == "__main__":
    main()
