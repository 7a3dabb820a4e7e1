"""Streaming IDX reader: memory bounded by what the header announces, whatever the file holds.

An IDX file is a 4-byte magic number (0x0000 08 NN: unsigned bytes, NN dimensions), NN big-endian
32-bit sizes, then the items (LeCun et al., http://yann.lecun.com/exdb/mnist/). MNIST ships them
gzip-compressed, and a small ``.gz`` can inflate to gigabytes (a "gzip bomb"). So the file is read
in chunks: the magic number is checked from the first 4 bytes, the sizes from the header, the
announced total against :data:`mnist_lit.limits.MAX_IDX_ITEMS`, and the items are inflated straight
into a tensor of the announced size; one byte more than announced ends the read with an error. At
no point is more than the announced content (plus a 1 MiB chunk) held in memory. md5 sums of the
file as stored and of its content are computed on the way, for the official-file checks.

Decompression is the standard library's :class:`gzip.GzipFile` (CRC, multi-member files, zero
padding); this module only bounds what it is asked to produce.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import torch

from mnist_lit.errors import DataError, IdxError
from mnist_lit.limits import MAX_IDX_FILE_BYTES, MAX_IDX_ITEMS

IDX_IMAGES_MAGIC = 2051  # IDX header: 0x00000803 = unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # IDX header: 0x00000801 = unsigned byte, 1 dimension
IMAGE_SIDE = 28  # pixels; MNIST and Fashion-MNIST are 28x28
CHUNK_SIZE = 2**20  # bytes inflated or read per step


@dataclass(frozen=True)
class IdxContent:
    """One IDX file read by :func:`read_idx_stream`.

    Attributes:
        tensor: uint8, (N, 28, 28) for images or (N,) for labels.
        file_md5: hex md5 of the bytes as stored (compressed or not).
        data_md5: hex md5 of the uncompressed IDX content (header and items).
        compressed: whether the file was gzip data.
    """

    tensor: torch.Tensor
    file_md5: str
    data_md5: str
    compressed: bool


class _HashingReader(io.RawIOBase):
    """A binary file whose every byte read goes through an md5."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.md5 = raw, hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = cast(io.BufferedIOBase, self.raw).readinto(buffer)  # binary files have it; typing.BinaryIO omits it
        if count:
            self.md5.update(memoryview(buffer)[:count])
        return count


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes, read in chunks (constant memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def check_file_size(path: str | Path) -> None:
    """Refuse a file larger than any IDX file this package reads (:data:`MAX_IDX_FILE_BYTES`), before reading it.

    Raises:
        IdxError: the file is larger.
    """
    size = Path(path).stat().st_size
    if size > MAX_IDX_FILE_BYTES:
        raise IdxError(
            f"{path}: {size:,} bytes, more than any IDX file of at most {MAX_IDX_ITEMS:,} items "
            f"({MAX_IDX_FILE_BYTES:,} bytes); not an MNIST file, replace it with the right one"
        )


def _fill(stream: io.BufferedIOBase, view: memoryview, digest) -> int:
    """Read into ``view`` until it is full or the stream ends; md5 what was read; return the bytes read."""
    done = 0
    while done < len(view):
        count = stream.readinto(view[done : done + CHUNK_SIZE])
        if not count:
            break
        digest.update(view[done : done + count])
        done += count
    return done


def _kind(expected_magic: int) -> str:
    return "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"


def _check_magic(magic: int, name: str | Path, expected_magic: int) -> None:
    """Refuse a magic number other than ``expected_magic``, naming a swapped file when it is the other kind's."""
    if magic != expected_magic:
        kind = _kind(expected_magic)
        hint = {
            IDX_IMAGES_MAGIC: " (an images file: are two names swapped?)",
            IDX_LABELS_MAGIC: " (a labels file: are two names swapped?)",
        }.get(magic, "")
        raise IdxError(
            f"{name}: IDX magic number {magic}{hint}, expected {expected_magic} for {kind}; "
            f"not an MNIST {kind} file, replace it with the right one"
        )


def _read_header(stream: io.BufferedIOBase, name: str | Path, expected_magic: int, digest) -> tuple[int, ...]:
    """Read and check the header (magic number, sizes, item limit); returns the items' shape, (N, 28, 28) or (N,).

    The magic number is checked from the first 4 bytes, before the rest of the header is read."""
    kind = _kind(expected_magic)
    header = bytearray(16 if expected_magic == IDX_IMAGES_MAGIC else 8)
    got = _fill(stream, memoryview(header)[:4], digest)
    if got == 4:
        _check_magic(struct.unpack(">I", header[:4])[0], name, expected_magic)
        got += _fill(stream, memoryview(header)[4:], digest)
    if got < len(header):
        raise IdxError(
            f"{name}: only {got} bytes, too short for an IDX {kind} file; delete it and download or copy it again"
        )
    count = struct.unpack(">I", header[4:8])[0]
    shape: tuple[int, ...] = (count,)
    if expected_magic == IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", header[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise IdxError(
                f"{name}: images are {rows}x{cols} pixels, expected 28x28; "
                "not MNIST-format data, replace it with the official file"
            )
        shape = (count, rows, cols)
    if count > MAX_IDX_ITEMS:
        raise IdxError(
            f"{name}: the header announces {count:,} {kind}, more than the limit of "
            f"{MAX_IDX_ITEMS:,}; not an MNIST file (or a damaged one), replace it"
        )
    return shape


def _read_items(stream: io.BufferedIOBase, name: str | Path, shape: tuple[int, ...], kind: str, digest) -> torch.Tensor:
    """Inflate exactly the items the header announced into a uint8 tensor of ``shape``; refuse fewer or more bytes."""
    header_size = 16 if len(shape) == 3 else 8
    items = torch.empty(math.prod(shape), dtype=torch.uint8)  # untouched pages: no memory until filled
    got = header_size + _fill(stream, items.numpy().data, digest)
    expected = header_size + len(items)
    if got < expected:
        raise IdxError(
            f"{name}: {got} bytes but its header promises {expected} ({shape[0]} {kind}); "
            "the file is truncated or damaged, delete it and download or copy it again"
        )
    if stream.read(1):
        raise IdxError(
            f"{name}: more than the {expected} bytes its header promises ({shape[0]} {kind}); "
            "the file is damaged or not one IDX file, delete it and download or copy it again"
        )
    return items.view(shape)


def read_idx_stream(
    source: BinaryIO, name: str | Path, expected_magic: int, check_count: Callable[[int], None] | None = None
) -> IdxContent:
    """Read an IDX file (gzip-compressed or not) from a binary stream, in bounded memory.

    Args:
        source: the file, opened for binary reading (or a ``BytesIO`` of its bytes); read to its end.
        name: the file's name for messages.
        expected_magic: :data:`IDX_IMAGES_MAGIC` (2051, items 28x28) or :data:`IDX_LABELS_MAGIC` (2049).
        check_count: called with the header's item count before any item is inflated; raises
            ``ValueError`` to refuse it (e.g. images that do not match the number of labels).

    Returns:
        :class:`IdxContent`; gzip is recognised by its magic bytes (``1f 8b``), not by the name.

    Raises:
        IdxError: damaged gzip data, wrong magic number, images other than 28x28, a header over
            :data:`MAX_IDX_ITEMS` items, content shorter or longer than the header announces, or
            not enough memory for the announced content; one line each.
    """
    hashing = _HashingReader(source)
    buffered = io.BufferedReader(hashing, CHUNK_SIZE)
    compressed = buffered.peek(2)[:2] == b"\x1f\x8b"
    stream = gzip.GzipFile(fileobj=buffered, mode="rb") if compressed else buffered
    kind, data_md5 = _kind(expected_magic), hashlib.md5(usedforsecurity=False)
    shape: tuple[int, ...] = (0,)
    try:
        shape = _read_header(stream, name, expected_magic, data_md5)
        if check_count is not None:
            try:
                check_count(shape[0])
            except ValueError as err:
                raise IdxError(str(err)) from None
        items = _read_items(stream, name, shape, kind, data_md5)
        while buffered.read(CHUNK_SIZE):  # the rest of the stored file (gzip's trailer), for its md5
            pass
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise IdxError(
            f"{name}: damaged gzip data ({err}); the file is truncated or corrupted, "
            "delete it and download or copy it again"
        ) from None
    except MemoryError:
        raise IdxError(
            f"{name}: not enough memory for the {shape[0]:,} {kind} its header announces; "
            "free memory or use a smaller file"
        ) from None
    return IdxContent(items, hashing.md5.hexdigest(), data_md5.hexdigest(), compressed)


def read_idx_file(
    path: str | Path, expected_magic: int, check_count: Callable[[int], None] | None = None
) -> IdxContent:
    """:func:`read_idx_stream` on a file, after :func:`check_file_size`.

    Raises:
        IdxError: see :func:`read_idx_stream`; also a missing or unreadable file.
    """
    try:
        check_file_size(path)
        with open(path, "rb", buffering=0) as handle:
            return read_idx_stream(handle, path, expected_magic, check_count)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise IdxError(f"{path}: cannot read it ({err.strerror}); check the file and its permissions") from None


def read_idx(path: str | Path, expected_magic: int) -> torch.Tensor:
    """Read one IDX file (gzip-compressed or not) into a uint8 tensor, in bounded memory.

    Args:
        path: the file; gzip is recognised by its magic bytes (``1f 8b``), not by the name, so
            a gzip file without ``.gz`` and an uncompressed file named ``.gz`` both read.
        expected_magic: 2051 for images (N, 28, 28) or 2049 for labels (N,).

    Returns:
        uint8 tensor of shape (N, 28, 28) for images or (N,) for labels.

    Raises:
        DataError: see :func:`read_idx_stream` (the same one-line messages).
    """
    try:
        return read_idx_file(path, expected_magic).tensor
    except IdxError as err:
        raise DataError(str(err)) from None


def decode_idx(path: Path, file_bytes: bytes, expected_magic: int) -> tuple[torch.Tensor, bytes]:
    """:func:`read_idx` on bytes already in memory (e.g. a download), named ``path`` in errors.

    Returns:
        (tensor, data): the uint8 tensor and the uncompressed IDX content (header and items).
    """
    try:
        content = read_idx_stream(io.BytesIO(file_bytes), path, expected_magic)
    except IdxError as err:
        raise DataError(str(err)) from None
    tensor = content.tensor
    dims = struct.pack(">II", *tensor.shape[1:]) if tensor.dim() == 3 else b""
    return tensor, struct.pack(">II", expected_magic, len(tensor)) + dims + tensor.numpy().tobytes()


def magic_for(name: str) -> int:
    """The IDX magic number a file of this name must have: 2051 for ``*-images-*``, else 2049."""
    return IDX_IMAGES_MAGIC if "-images-" in name else IDX_LABELS_MAGIC
