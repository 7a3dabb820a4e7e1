"""One full-size epoch: Fashion-MNIST (60,000 + 10,000 real images, Debian's dataset-fashion-mnist)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli, version_dirs

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install -y dataset-fashion-mnist (.ci/run does)")
    return FASHION_DIR


def test_one_full_size_epoch_on_fashion_mnist(tmp_path, fashion_dir):
    proc = run_cli("fit", "--config", str(REPO / "configs" / "fashion_mnist.yaml"), "--data.data_dir", str(fashion_dir),
                   "--trainer.max_epochs", "1", cwd=tmp_path)
    run_dir = version_dirs(tmp_path)[-1]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 329  # ceil(42,000 / 128): the tutorial's 70/30 split of 60,000 images
    assert last["datamodule_hyper_parameters"]["dataset"] == "fashion_mnist"
    test_acc = float(next(l for l in proc.stdout.splitlines() if l.startswith("Test accuracy:")).split()[2])
    assert 0.80 <= test_acc < 0.95  # one epoch of the tutorial's CNN on Fashion-MNIST; MNIST-level accuracy would be a mix-up
