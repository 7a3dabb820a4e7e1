"""The tutorial's network as a plain ``nn.Module`` (:class:`SeedCNN`), the class names of its outputs, and the
one place pixels are scaled (:func:`scale_pixels`). No Lightning here: export and serving use these alone."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mnist_lit.errors import HyperparameterError

NUM_CLASSES = 10
PixelScale = Literal["unit", "raw"]
#: Class names per data set, index = label. Fashion-MNIST's are torchvision's ``FashionMNIST.classes``
#: (Zalando's labels), written out so that the model needs no torchvision import.
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(NUM_CLASSES)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def scale_pixels(
    images: torch.Tensor, pixel_scale: PixelScale = "unit", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Turn uint8 pixels into the network's input. The only place pixels are scaled.

    Args:
        images: uint8 tensor of any shape, usually (B, 1, 28, 28), values 0-255.
        pixel_scale: ``"unit"`` divides by 255 (values in [0, 1], the default);
            ``"raw"`` keeps 0-255, exactly what the Keras tutorial feeds.
        dtype: floating dtype of the result (the network's parameters' dtype; float32 by default).

    Returns:
        ``dtype`` tensor of the same shape and device.

    Raises:
        HyperparameterError: ``images`` is not uint8 or ``pixel_scale`` is unknown.
    """
    if images.dtype != torch.uint8:
        raise HyperparameterError(
            f"the model takes uint8 pixels (0-255), got {images.dtype}; pass the raw image "
            "tensor, it scales them itself"
        )
    if pixel_scale == "unit":
        return images.to(dtype).div_(255.0)
    if pixel_scale == "raw":
        return images.to(dtype)
    raise HyperparameterError(f"pixel_scale must be 'unit' or 'raw', got {pixel_scale!r}")


class SeedCNN(nn.Module):
    """Conv32-pool-Conv64-pool-dropout-Dense128-dropout-Dense10, as in the Keras tutorial.

    Layers: Conv2d(1, 32, 3) ReLU -> MaxPool 2 -> Conv2d(32, 64, 3) ReLU -> MaxPool 2 ->
    Dropout(``dropout1``) -> Flatten (64 x 5 x 5 = 1,600) -> Linear(1600, 128) ReLU ->
    Dropout(``dropout2``) -> Linear(128, 10). 225,034 parameters. Valid padding, as Keras's default.

    Two exact speed-ups (measured by ``benchmarks/bench_training.py``; figures in ``docs/performance.md``): each MaxPool runs before its ReLU, which gives the same outputs
    and gradients (ReLU is monotone, so ``max(relu(a)) == relu(max(a))``) on a quarter of the
    elements; and the convolutions run in the channels-last memory format (the layout oneDNN and
    cuDNN prefer; the values are the same, only their order in memory changes).

    Weights are Glorot-uniform and biases zero, Keras's defaults for Conv2D and Dense.
    (Keras flattens channels-last, PyTorch channels-first; that only permutes Dense128's
    input rows and changes nothing the network can learn.)

    Args:
        dropout1: rate after the second pooling (tutorial: 0.25).
        dropout2: rate after Dense128 (tutorial: 0.5).

    Input: float32 (N, 1, 28, 28). Output: logits, float32 (N, 10) (no softmax).
    """

    def __init__(self, dropout1: float = 0.25, dropout2: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Dropout(dropout1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 128),
            nn.ReLU(),
            nn.Dropout(dropout2),
            nn.Linear(128, NUM_CLASSES),
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))
