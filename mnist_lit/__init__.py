"""mnist_lit: the classic Keras MNIST tutorial, done the PyTorch Lightning way."""

from mnist_lit.data import DataError, MNISTDataModule
from mnist_lit.model import MNISTClassifier, SeedCNN, scale_pixels

__all__ = ["DataError", "MNISTClassifier", "MNISTDataModule", "SeedCNN", "scale_pixels"]
__version__ = "0.1.0"
