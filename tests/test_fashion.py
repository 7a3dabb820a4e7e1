"""One full-size epoch: Fashion-MNIST (60,000 + 10,000 real images, Debian's dataset-fashion-mnist)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, printed_test_acc, run_cli, version_dirs

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install -y dataset-fashion-mnist (.ci/run does)"
        )
    return FASHION_DIR


@pytest.mark.slow
def test_one_full_size_epoch_on_fashion_mnist(tmp_path, fashion_dir):
    proc = run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / "fashion_mnist.yaml"),
        "--data.data_dir",
        str(fashion_dir),
        "--trainer.max_epochs",
        "1",
        cwd=tmp_path,
    )
    run_dir = version_dirs(tmp_path)[-1]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 329  # ceil(42,000 / 128): the tutorial's 70/30 split of 60,000 images
    assert last["datamodule_hyper_parameters"]["dataset"] == "fashion_mnist"
    test_acc = printed_test_acc(proc.stdout)
    assert (
        0.80 <= test_acc < 0.95
    )  # one epoch of the tutorial's CNN on Fashion-MNIST; MNIST-level accuracy would be a mix-up


def test_fashion_files_read_as_mnist_name_the_missing_flag(fashion_dir):
    """Forgetting --data.dataset fashion_mnist: the official Fashion-MNIST files are recognised by their md5
    and the error names the flag, instead of calling the (undamaged, packaged) file damaged."""
    from mnist_lit.data import load_split
    from mnist_lit.errors import DataError

    with pytest.raises(DataError) as error:
        load_split(fashion_dir, "test", "mnist")
    message = str(error.value)
    assert (
        "is the official fashion_mnist t10k-images-idx3-ubyte" in message and "--data.dataset fashion_mnist" in message
    )
    assert "delete" not in message and "\n" not in message
    images, labels = load_split(fashion_dir, "test", "fashion_mnist")
    assert images.shape == (10_000, 1, 28, 28) and torch.bincount(labels).tolist() == [1_000] * 10
