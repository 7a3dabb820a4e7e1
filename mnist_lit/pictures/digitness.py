"""A small separately trained "digit or not" network: the picture reader's check against printed letters.

The MNIST network never saw a letter, so it is often sure of one (a T read as a 7 at 99%). :class:`DigitnessNet`
was trained (:mod:`mnist_lit.pictures.train_digitness`) on MNIST training digits and digits printed in the
system's fonts against letters printed in the same fonts (:mod:`mnist_lit.pictures.glyphs`), all cut out as the
reader cuts out a mark. Its weights ship with the package (``digitness.pt``, a state_dict) and are loaded once,
on first use. :func:`digit_probability` gives P(digit) per crop; :mod:`mnist_lit.pictures.verdict` refuses a
picture when one of its crops is under :data:`MIN_DIGITNESS`.
"""

from __future__ import annotations

import functools
from importlib import resources

import torch
from torch import nn

#: The shipped weights, a file of the package ``mnist_lit.pictures``.
WEIGHTS_FILE = "digitness.pt"
#: A crop with P(digit) under this is not a digit. Calibrated on real digits only, never on pictures without a
#: digit: the largest value of the form 1 or 3 x 10^-k under which at most 0.2% of the 3,000 validation digits of
#: mnist-10k's training split (not trained on), as they are and cut out again from photo size, fall (the printout
#: of :mod:`mnist_lit.pictures.train_digitness`; docs/pictures.md has the rates measured with it).
MIN_DIGITNESS = 3e-5


class DigitnessNet(nn.Module):
    """uint8 (K, 1, 28, 28) MNIST-style crops -> float32 (K,) logits of "this is a digit".

    Three 3x3 convolutions (8, 16, 32 channels, ReLU, 2x2 max-pooling after each), a 32-unit hidden layer and
    one output; pixels are scaled by 1/255 inside.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 3 * 3, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits float32 (K,) for uint8 (K, 1, 28, 28) pixels (any dtype is scaled by 1/255)."""
        return self.head(self.features(pixels.float() / 255.0)).squeeze(1)


@functools.cache
def shipped_model() -> DigitnessNet:
    """The network with the package's weights (:data:`WEIGHTS_FILE`), in eval mode; loaded once per process.

    Raises:
        FileNotFoundError: the package was installed without its data file.
    """
    model = DigitnessNet()
    with resources.files("mnist_lit.pictures").joinpath(WEIGHTS_FILE).open("rb") as weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def digit_probability(pixels: torch.Tensor, model: DigitnessNet | None = None) -> torch.Tensor:
    """P(digit) float32 (K,) for MNIST-style crops uint8 (K, 1, 28, 28), by ``model`` (default: the shipped one)."""
    model = model if model is not None else shipped_model()
    if len(pixels) == 0:
        return torch.zeros(0)
    with torch.inference_mode():
        return torch.sigmoid(model(pixels.reshape(-1, 1, 28, 28)))
