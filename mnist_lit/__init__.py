"""mnist_lit: the classic Keras MNIST tutorial, done the PyTorch Lightning way."""

from __future__ import annotations

import importlib

#: Public names and their modules, imported on first use (PEP 562): ``python -m mnist_lit`` imports this
#: package first, and its ``--help`` or a usage error should not wait for torch and Lightning.
_EXPORTS = {
    "DataError": "mnist_lit.errors",
    "MNISTDataModule": "mnist_lit.data",
    "MNISTClassifier": "mnist_lit.model",
    "SeedCNN": "mnist_lit.model",
    "scale_pixels": "mnist_lit.model",
}

__all__ = ["DataError", "MNISTClassifier", "MNISTDataModule", "SeedCNN", "scale_pixels"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``mnist_lit.MNISTClassifier`` etc.: import the defining module on first access.

    Raises:
        AttributeError: ``name`` is not one of :data:`__all__`.
    """
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mnist_lit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted({*globals(), *__all__})
