"""Bad data files built from the real MNIST subset: each ends in one line naming the file, the fault and the fix."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import pytest
import torch
from conftest import offline_data

from mnist_lit.cli import main
from mnist_lit.data import load_split, read_idx
from mnist_lit.errors import DataError

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@pytest.fixture
def data_dir(tmp_path, mnist_dir) -> Path:
    """A writable copy of the real subset: tmp/MNIST/raw/*.gz (10,000 train + the official 10,000 test)."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (mnist_dir / "MNIST" / "raw").glob("*.gz"):
        (raw / path.name).write_bytes(path.read_bytes())
    return tmp_path / "data"


def gz(data: bytes, compresslevel: int = 2) -> bytes:
    """gzip-compress (a low level: quick, and the files stay real gzip files)."""
    return gzip.compress(data, compresslevel=compresslevel)


def raw_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def content(data_dir: Path, stem: str) -> bytes:
    """The uncompressed IDX bytes of the real file."""
    return gzip.decompress((raw_dir(data_dir) / f"{stem}.gz").read_bytes())


def replace_file(data_dir: Path, stem: str, data: bytes, name: str | None = None) -> Path:
    """Put ``data`` in place of ``stem(.gz)`` under ``name`` (default ``stem.gz``)."""
    (raw_dir(data_dir) / f"{stem}.gz").unlink()
    path = raw_dir(data_dir) / (name or f"{stem}.gz")
    path.write_bytes(data)
    return path


def one_line_error(data_dir: Path, stage: str) -> str:
    with pytest.raises(DataError) as err:
        load_split(data_dir, stage)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_real_subset_is_accepted_with_a_notice_of_its_counts(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="mnist_lit")
    images, labels = load_split(data_dir, "train")
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8 and labels.shape == (10_000,)
    notices = [r.getMessage() for r in caplog.records if "non-official" in r.getMessage()]
    assert len(notices) == 1 and "10,000 images" in notices[0] and "60,000" in notices[0]
    caplog.clear()
    images, labels = load_split(data_dir, "test")  # the official t10k files: md5 checked, no notice
    assert len(labels) == 10_000 and not [r for r in caplog.records if "non-official" in r.getMessage()]


def test_truncated_gz(data_dir):
    gz = (raw_dir(data_dir) / f"{TEST_IMAGES}.gz").read_bytes()
    replace_file(data_dir, TEST_IMAGES, gz[: len(gz) // 2])
    message = one_line_error(data_dir, "test")
    assert f"{TEST_IMAGES}.gz: damaged gzip data" in message and "download or copy it again" in message


def test_gzip_without_gz_suffix_and_plain_file_named_gz_both_read(data_dir, mnist_dir):
    expected = read_idx(mnist_dir / "MNIST" / "raw" / f"{TRAIN_IMAGES}.gz", 2051)
    gz = (raw_dir(data_dir) / f"{TRAIN_IMAGES}.gz").read_bytes()
    replace_file(data_dir, TRAIN_IMAGES, gz, name=TRAIN_IMAGES)  # gzip data, no .gz
    replace_file(data_dir, TRAIN_LABELS, content(data_dir, TRAIN_LABELS))  # plain data named .gz
    images, labels = load_split(data_dir, "train")
    assert torch.equal(images.squeeze(1), expected)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the first ten MNIST training labels


def test_wrong_magic(data_dir):
    data = bytearray(content(data_dir, TEST_IMAGES))
    data[0:4] = struct.pack(">I", 2052)
    replace_file(data_dir, TEST_IMAGES, gz(bytes(data)))
    message = one_line_error(data_dir, "test")
    assert "IDX magic number 2052, expected 2051 for images" in message and "replace it" in message


def test_labels_file_in_place_of_images_is_named(data_dir):
    replace_file(data_dir, TEST_IMAGES, (raw_dir(data_dir) / f"{TEST_LABELS}.gz").read_bytes())
    message = one_line_error(data_dir, "test")
    assert "magic number 2049 (a labels file: are two names swapped?)" in message


def test_images_of_28_by_27(data_dir):
    data = content(data_dir, TRAIN_IMAGES)
    images = torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(-1, 28, 28)[:, :, :27]
    header = struct.pack(">IIII", 2051, len(images), 28, 27)
    replace_file(data_dir, TRAIN_IMAGES, gz(header + images.contiguous().numpy().tobytes()))
    message = one_line_error(data_dir, "train")
    assert f"{TRAIN_IMAGES}.gz: images are 28x27 pixels, expected 28x28" in message


def test_10000_images_with_9999_labels(data_dir):
    data = content(data_dir, TRAIN_LABELS)
    replace_file(data_dir, TRAIN_LABELS, gz(struct.pack(">II", 2049, 9_999) + data[8:-1]))
    message = one_line_error(data_dir, "train")
    assert "holds 10,000 images but train-labels-idx1-ubyte.gz holds 9,999 labels" in message


def test_header_promising_more_than_the_file_holds(data_dir):
    data = content(data_dir, TRAIN_LABELS)
    replace_file(data_dir, TRAIN_LABELS, gz(data[:-500]))  # valid gzip of a cut file
    message = one_line_error(data_dir, "train")
    assert "9508 bytes but its header promises 10008 (10000 labels)" in message and "truncated" in message


def test_official_name_with_wrong_md5(data_dir):
    data = bytearray(content(data_dir, TEST_IMAGES))
    data[16 + 784 * 5 + 400] ^= 0xFF  # one pixel of the sixth test image: structure intact, content altered
    replace_file(data_dir, TEST_IMAGES, gz(bytes(data)))
    message = one_line_error(data_dir, "test")
    assert f"{TEST_IMAGES}.gz: wrong md5 for the official {TEST_IMAGES}" in message
    assert "expected 2646ac647ad5339dbf082846283269ea" in message and "10,000 items" in message


def test_official_file_recompressed_or_gunzipped_still_matches(data_dir):
    data = content(data_dir, TEST_IMAGES)
    official_gz = (raw_dir(data_dir) / f"{TEST_IMAGES}.gz").read_bytes()
    replace_file(data_dir, TEST_IMAGES, gz(data, compresslevel=1))  # other gzip bytes, same data
    assert (raw_dir(data_dir) / f"{TEST_IMAGES}.gz").read_bytes() != official_gz
    replace_file(data_dir, TEST_LABELS, content(data_dir, TEST_LABELS), name=TEST_LABELS)  # gunzipped
    images, labels = load_split(data_dir, "test")
    assert len(images) == 10_000 and labels[:5].tolist() == [7, 2, 1, 0, 4]  # the official first test labels


def test_cli_reports_a_bad_file_in_one_line_before_training(data_dir, tmp_path, monkeypatch, capsys):
    data = bytearray(content(data_dir, TEST_LABELS))
    data[8] = (data[8] + 1) % 10  # the first test label changed: an altered official file
    replace_file(data_dir, TEST_LABELS, gz(bytes(data)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(Path(__file__).parents[1] / "configs" / "mnist.yaml"),
                *offline_data(data_dir),
            ]
        )
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{TEST_LABELS}.gz: wrong md5" in errors[0]
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))  # stopped before training


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--data.batch_sise", "64", "error: unrecognized arguments: --data.batch_sise 64"),
        ("--data.batch_size", "many", "error: --data.batch_size many: expected an int"),
        ("--data.batch_size", "0", "error: batch_size must be a positive integer, got 0"),
        ("--data.val_split", "1.5", "error: val_split must be between 0 and 1 (exclusive), got 1.5"),
        (
            "--data.val_split",
            "0.99995",
            "error: val_split=0.99995 of 10000 training images leaves an empty training set",
        ),
    ],
)
def test_configuration_errors_stop_before_anything_is_written(
    flag, value, message, mnist_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(Path(__file__).parents[1] / "configs" / "mnist.yaml"),
                *offline_data(mnist_dir),
                flag,
                value,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith(message)]
    assert not (tmp_path / "lightning_logs").exists()  # no run folder, no checkpoint, no event file


def test_a_file_changed_in_place_between_two_reads_is_read_and_checked_again(data_dir):
    # load_split keeps checked splits per process; a same-size rewrite within one clock tick (same
    # mtime) must not be served from that cache.
    images, labels = load_split(data_dir, "train")
    labels[0] = 9  # the caller's copy: not the cached one
    assert int(load_split(data_dir, "train")[1][0]) == 5  # the first training label of MNIST
    data = bytearray(content(data_dir, TRAIN_LABELS))
    data[8] = 11  # the first label, in place: same size, same name
    (raw_dir(data_dir) / f"{TRAIN_LABELS}.gz").write_bytes(gz(bytes(data)))
    assert "label 11 is not a digit" in one_line_error(data_dir, "train")
    data[8] = 3
    (raw_dir(data_dir) / f"{TRAIN_LABELS}.gz").write_bytes(gz(bytes(data)))
    assert int(load_split(data_dir, "train")[1][0]) == 3
    assert torch.equal(load_split(data_dir, "train")[0], images)


def test_split_cache_keeps_the_most_recently_used_and_size_0_keeps_none(mnist_dir, monkeypatch):
    from mnist_lit.data import splits as data

    monkeypatch.setattr(data, "_split_cache", {})
    monkeypatch.setattr(data, "SPLIT_CACHE_SIZE", 0)
    assert load_split(mnist_dir, "test")[0].shape == (10_000, 1, 28, 28) and data._split_cache == {}
    monkeypatch.setattr(data, "SPLIT_CACHE_SIZE", 2)
    load_split(mnist_dir, "test")
    load_split(mnist_dir, "train")
    load_split(mnist_dir, "test")  # used again: now the most recent
    load_split(mnist_dir, "train", dataset="mnist")  # a hit: nothing evicted
    assert [key[1] for key in data._split_cache] == ["test", "train"]
    monkeypatch.setattr(data, "SPLIT_CACHE_SIZE", 1)
    load_split(mnist_dir, "test")
    assert [key[1] for key in data._split_cache] == ["test"]
