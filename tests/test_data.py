"""MNISTDataModule on the real MNIST subset: reading, split, batches, scaling, errors."""

from __future__ import annotations

import pytest
import torch

from mnist_lit.data import MNISTDataModule, load_split, split_indices
from mnist_lit.errors import DataError, HyperparameterError
from mnist_lit.model import scale_pixels


def make_dm(mnist_dir, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(mnist_dir), download=False, **kwargs)
    dm.prepare_data()
    return dm


def test_load_split_reads_real_files(mnist_dir):
    images, labels = load_split(mnist_dir, "train")
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    # Training image 0 is the well-known "5" (label 5, pixel sum 27525; see the data's README).
    assert int(labels[0]) == 5 and int(images[0].sum()) == 27525
    test_images, test_labels = load_split(mnist_dir, "test")
    assert test_images.shape == (10_000, 1, 28, 28)
    assert int(test_labels[0]) == 7  # the first official test digit is a 7
    assert torch.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_tail_split_is_the_last_30_percent_in_file_order(mnist_dir):
    dm = make_dm(mnist_dir)
    dm.setup("fit")
    images, labels = load_split(mnist_dir, "train")
    assert len(dm.data_train) == 7_000 and len(dm.data_val) == 3_000
    assert torch.equal(dm.data_val.images, images[7_000:]) and torch.equal(dm.data_val.labels, labels[7_000:])
    assert torch.equal(dm.data_train.images, images[:7_000])


@pytest.mark.parametrize("val_split, n_val", [(0.3, 3_000), (0.25, 2_500), (0.12345, 1_234)])
def test_val_size_is_rounded_fraction_of_n(val_split, n_val):
    train_idx, val_idx = split_indices(10_000, val_split, "tail")
    assert len(val_idx) == n_val and len(train_idx) == 10_000 - n_val


def test_random_split_is_disjoint_complete_and_independent_of_global_rng():
    torch.manual_seed(1)
    first = split_indices(10_000, 0.3, "random", split_seed=42)
    torch.manual_seed(12345)
    torch.rand(100)
    second = split_indices(10_000, 0.3, "random", split_seed=42)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=False))
    train_idx, val_idx = first
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(10_000))
    assert not torch.equal(val_idx, torch.arange(7_000, 10_000))
    other = split_indices(10_000, 0.3, "random", split_seed=43)[1]
    assert not torch.equal(val_idx, other)


def test_setup_is_idempotent(mnist_dir):
    dm = make_dm(mnist_dir, split="random")
    dm.setup("fit")
    train, val = dm.data_train, dm.data_val
    dm.setup("fit")
    assert dm.data_train is train and dm.data_val is val
    again = make_dm(mnist_dir, split="random")
    again.setup("fit")
    assert torch.equal(again.data_val.labels, val.labels) and torch.equal(again.data_val.images, val.images)


def test_batches_are_uint8_pixels_and_int64_labels(mnist_dir):
    dm = make_dm(mnist_dir)
    dm.setup("fit")
    images, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.shape == (128, 1, 28, 28) and images.dtype == torch.uint8  # the model scales them
    assert labels.shape == (128,) and labels.dtype == torch.int64
    assert int(images.min()) == 0 and int(images.max()) == 255
    val_batches = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val_batches) == 3_000 and len(val_batches) == 24  # ceil(3000 / 128)


def test_scale_pixels_is_exact():
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert scale_pixels(pixels).tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert scale_pixels(pixels, "raw").tolist() == [0.0, 51.0, 255.0]
    with pytest.raises(HyperparameterError, match="uint8"):
        scale_pixels(pixels.float())


def test_train_loader_shuffles_and_test_loader_keeps_order(mnist_dir):
    dm = make_dm(mnist_dir)
    dm.setup()
    torch.manual_seed(0)
    first = next(iter(dm.train_dataloader()))[1]
    assert not torch.equal(first, dm.data_train.labels[:128])
    test_labels = torch.cat([b[1] for b in dm.test_dataloader()])
    assert torch.equal(test_labels, load_split(mnist_dir, "test")[1])
    assert dm.data_predict is dm.data_test


def test_missing_files_without_download_names_the_four_files(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "MNIST" / "raw") in message
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        assert name in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_split": 1.0}, "val_split"),
        ({"val_split": 0.0}, "val_split"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        MNISTDataModule(**kwargs)


def test_split_leaving_no_training_images_is_refused():
    with pytest.raises(DataError, match="empty training set"):
        split_indices(3, 0.9, "tail")


def test_num_workers_and_batch_size_above_their_bounds_are_refused_in_one_line():
    """``num_workers: 40000`` forked worker processes until memory ran out; a ``batch_size`` beyond ``sys.maxsize``
    ended in an ``itertools.islice`` traceback. Both now have an upper bound (:mod:`mnist_lit.limits`)."""
    from mnist_lit import limits

    bound, largest = limits.max_num_workers(), limits.MAX_BATCH_SIZE
    assert bound == limits.WORKERS_PER_CPU * limits.usable_cpus() >= limits.WORKERS_PER_CPU
    MNISTDataModule(num_workers=bound, batch_size=largest)  # the bounds themselves are allowed
    for workers in (bound + 1, 40_000, 10**18):
        with pytest.raises(DataError) as err:
            MNISTDataModule(num_workers=workers)
        message = str(err.value)
        assert message.startswith(f"--data.num_workers {workers} is more than {bound}, ") and "\n" not in message
        assert f"give 0 to {bound}" in message and "CPU" in message
    for size in (largest + 1, 10**18, 2**63):
        with pytest.raises(DataError) as err:
            MNISTDataModule(batch_size=size)
        message = str(err.value)
        assert message.startswith(f"--data.batch_size {size} is more than {largest:,}") and "\n" not in message
        assert f"give 1 to {largest:,}" in message
