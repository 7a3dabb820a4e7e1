"""Download IDX files from a list of mirrors, bounded in size and time; verified, then renamed into place.

Why not ``torchvision.datasets.utils.download_url``: it has no timeout (a dead mirror can hang a
job forever), reads whatever a server sends, and writes straight to the final file name, so a
killed download leaves a half-written file under the real name. Here a file appears under its
final name only once it is complete and verified; every failure (HTTP error, TLS error, timeout,
refused connection, an HTML page instead of data, a truncated, oversized or corrupted body) is
logged with its URL and the next mirror is tried.

Bounds: each body is read up to its known size (:data:`mnist_lit.data.files.OFFICIAL_SIZES`; other files
:data:`mnist_lit.limits.MAX_DOWNLOAD_BYTES`) and no further; each connect and read waits at most
``timeout`` seconds; all downloads of one call together stop at ``deadline`` seconds; a mirror that
cannot be reached (refused, timed out, no such host, TLS error) is not asked again in the same call.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnist_lit.atomic import atomic_write
from mnist_lit.data.files import DATASETS, OFFICIAL_SIZES, RAW_FILES, missing_stems, raw_folder
from mnist_lit.data.idx import decode_idx, magic_for
from mnist_lit.errors import DownloadError
from mnist_lit.limits import DOWNLOAD_DEADLINE, DOWNLOAD_TIMEOUT, MAX_DOWNLOAD_BYTES

log = logging.getLogger(__name__)

#: Sent as User-Agent; some mirrors refuse Python's default one. torchvision sends the same.
USER_AGENT = "pytorch/vision"
CHUNK_SIZE = 1 << 20  # bytes per read


class _BadResponse(Exception):
    """One mirror's answer is unusable (HTML, truncated, oversized, wrong md5, not IDX); the message says why."""


class _DeadlinePassed(Exception):
    """The call's overall deadline passed; no further request is made."""


def describe_failure(err: BaseException, timeout: float) -> str:
    """A short reason for one failed request, e.g. ``HTTP 403 Forbidden`` or ``TLS error: ...``."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else OSError(str(err.reason))
    if isinstance(err, (ssl.SSLError, ssl.CertificateError)):
        return f"TLS error: {err}"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f"timed out (no answer within {timeout:g} s)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return f"host not found ({err.strerror}; offline?)"
    if isinstance(err, _BadResponse):
        return str(err)
    return f"{type(err).__name__}: {err}"


def unreachable(err: BaseException) -> bool:
    """True for failures of the mirror itself (refused, timed out, no such host, TLS), not of one file on it."""
    return isinstance(err, OSError) and not isinstance(err, urllib.error.HTTPError)  # URLError is an OSError


def _set_read_timeout(response, seconds: float) -> None:
    """Shorten the per-read timeout of an open response to what is left of the deadline. http.client keeps
    the connection's socket only inside the response's file object, hence the attribute walk."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _read_body(response, max_bytes: int, time_left: Callable[[], float]) -> bytearray:
    """The body of an open response, refused when announced or sent longer than ``max_bytes``."""
    content_type = response.headers.get_content_type()
    if content_type == "text/html":
        raise _BadResponse(f"an HTML page instead of data (Content-Type {content_type})")
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise _BadResponse(f"{int(length):,} bytes announced, more than the {max_bytes:,} of the file")
    data = bytearray()
    while True:
        _set_read_timeout(response, time_left())
        chunk = response.read1(min(CHUNK_SIZE, max_bytes + 1 - len(data)))
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise _BadResponse(f"more than the {max_bytes:,} bytes of the file sent; stopped reading")
    if length is not None and len(data) != int(length):
        raise _BadResponse(f"truncated: {len(data)} of {int(length)} bytes arrived")
    return data


def _check_body(data: bytearray, name: str, md5: str | None, verify: Callable[[bytes, str], object] | None) -> None:
    """Refuse a complete body that is an HTML page, has another ``md5`` or fails ``verify``."""
    if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise _BadResponse("an HTML page instead of data")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if md5 is not None and digest != md5:
        raise _BadResponse(f"md5 {digest} of {len(data)} bytes, expected {md5} (truncated or damaged)")
    if verify is not None:
        try:
            verify(bytes(data), name)
        except ValueError as err:
            raise _BadResponse(f"not a valid file: {err}") from None


def fetch_file(
    url: str,
    target: Path,
    md5: str | None,
    timeout: float = DOWNLOAD_TIMEOUT,
    verify: Callable[[bytes, str], object] | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    deadline: float | None = None,
) -> None:
    """Download ``url`` and write it to ``target`` only once it is complete and verified.

    The body is read into memory, at most ``max_bytes`` of it: a Content-Length above it is refused
    before reading, and a body that goes on past it is cut off there. It is then checked (complete
    against Content-Length, not an HTML page, ``md5`` when given, then ``verify(data, target.name)``)
    and written with :func:`mnist_lit.atomic.atomic_write` (temporary name, fsync, rename). On any
    failure ``target`` is left as it was and no temporary file remains.

    Args:
        url: the file's URL.
        target: final path.
        md5: expected hex md5 of the bytes, or ``None`` to skip that check.
        timeout: seconds for connecting and for each read.
        verify: extra check of the complete body; raises ``ValueError`` to reject it.
        max_bytes: the file's known size (or an upper bound); not one byte more is read.
        deadline: ``time.monotonic()`` value after which no read waits (``None``: no deadline).

    Raises:
        urllib.error.URLError, OSError, http.client.HTTPException: the request failed.
        _BadResponse: the answer is not the file (HTML, truncated, oversized, wrong md5, rejected by ``verify``).
        _DeadlinePassed: ``deadline`` came before the body was complete.
    """

    def time_left() -> float:
        left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        if left <= 0:
            raise _DeadlinePassed()
        return left

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=time_left()) as response:
        data = _read_body(response, max_bytes, time_left)
    _check_body(data, target.name, md5, verify)
    with atomic_write(target) as handle:
        handle.write(data)


@dataclass
class _Mirrors:
    """The mirrors of one :func:`download_files` call and what it has seen of them: each mirror's reasons
    for failing, the unreachable ones (not asked again), and the call's deadline."""

    urls: list[str]
    timeout: float
    deadline: float  # seconds for the whole call, for messages
    ends_at: float  # time.monotonic() at the deadline
    reasons: dict[str, list[str]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)

    def fetch(self, name: str, folder: Path, md5: str | None, verify, max_bytes: int) -> Path | None:
        """Try ``mirror + name`` on each live mirror until one delivers it verified; its path, or None."""
        for i, mirror in enumerate(self.urls):
            if mirror in self.dead or time.monotonic() >= self.ends_at:
                continue
            url, target = mirror + name, folder / name
            log.info("Downloading %s to %s", url, target)
            try:
                fetch_file(url, target, md5, self.timeout, verify, max_bytes, self.ends_at)
            except _DeadlinePassed:
                log.warning("Download stopped: %s: the deadline of %g s passed", url, self.deadline)
                continue
            except (OSError, http.client.HTTPException, _BadResponse, ValueError) as err:
                more = "trying the next mirror" if i + 1 < len(self.urls) else "no more mirrors"
                log.warning("Download failed: %s: %s; %s", url, self._failed(mirror, err), more)
                continue
            log.info("Downloaded and verified %s", target)
            return target
        return None

    def _failed(self, mirror: str, err: BaseException) -> str:
        reason = describe_failure(err, self.timeout)
        if reason not in self.reasons.setdefault(mirror, []):
            self.reasons[mirror].append(reason)
        if unreachable(err):
            self.dead.add(mirror)
        return reason

    def why(self) -> str:
        """Each mirror's reasons, and the deadline when it passed; for the error message."""
        why = "; ".join(f"{m}: {', '.join(self.reasons[m])}" for m in self.urls if m in self.reasons)
        if time.monotonic() >= self.ends_at:
            why = f"{why}; " * bool(why) + f"stopped at the deadline of {self.deadline:g} s (--data.download_deadline)"
        return why or "no mirrors configured"


def download_files(
    folder: str | Path,
    files: Sequence[tuple[str, str | None]],
    mirrors: Sequence[str],
    timeout: float = DOWNLOAD_TIMEOUT,
    verify: Callable[[bytes, str], object] | None = None,
    offline_hint: str = "",
    sizes: Mapping[str, int] | None = None,
    deadline: float = DOWNLOAD_DEADLINE,
) -> list[Path]:
    """Download each file from the first mirror that delivers it verified, within ``deadline`` seconds.

    For each ``(name, md5)`` the URLs ``mirror + name`` are tried in order; each failure is
    logged (WARNING, naming the URL and the reason) and the next mirror is tried. A mirror that
    cannot be reached (:func:`unreachable`) is skipped for the remaining files. Files are written
    by :func:`fetch_file` (temporary name, verified, renamed).

    Args:
        folder: where the files go (created if needed).
        files: ``(file name, expected md5 or None)`` pairs, e.g. torchvision's ``MNIST.resources``.
        mirrors: base URLs ending in ``/`` (a missing ``/`` is added).
        timeout: seconds for connecting and for each read, per request.
        verify: extra check ``verify(data, file_name)`` of each complete body (e.g. its IDX
            structure); raises ``ValueError`` to reject it.
        offline_hint: appended to the error message (e.g. which files to place by hand).
        sizes: each file's size in bytes, where known (:data:`mnist_lit.data.files.OFFICIAL_SIZES`); no more
            is read. Files not in it are read up to :data:`mnist_lit.limits.MAX_DOWNLOAD_BYTES`.
        deadline: seconds for the whole call; no request starts or waits past it.

    Returns:
        The paths of the downloaded files, in the order of ``files``.

    Raises:
        DownloadError: some file came from no mirror; one line with each mirror's reason and ``offline_hint``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    urls = [m if m.endswith("/") else m + "/" for m in mirrors]
    calls = _Mirrors(urls, timeout, deadline, time.monotonic() + deadline)
    fetched = [
        calls.fetch(name, folder, md5, verify, (sizes or {}).get(name, MAX_DOWNLOAD_BYTES)) for name, md5 in files
    ]
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        raise DownloadError(f"could not download {', '.join(missing)} ({calls.why()}). {offline_hint}".strip())
    return [path for path in fetched if path is not None]


def download_missing(
    data_dir: str | Path,
    dataset: str,
    mirrors: Sequence[str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
    deadline: float = DOWNLOAD_DEADLINE,
) -> None:
    """Fetch the files of ``dataset`` found under none of their names in ``data_dir``, if any, as ``NAME.gz``.

    Each is read up to its official size (:data:`mnist_lit.data.files.OFFICIAL_SIZES`), checked against torchvision's md5 and the
    IDX structure (:func:`mnist_lit.data.idx.decode_idx`) before it gets its name (:func:`download_files`).

    Args:
        mirrors: base URLs tried in order; ``None``: torchvision's mirrors for ``dataset``, https first
            (the same files, but nobody on the way can read or swap them).

    Raises:
        DownloadError: some file came from no mirror; the message gives each mirror's reason and the
            offline command.
    """
    missing = missing_stems(data_dir, dataset)
    if not missing:
        return
    dataset_cls = DATASETS[dataset]
    md5s = dict(dataset_cls.resources)
    if mirrors is None:
        mirrors = sorted(dataset_cls.mirrors, key=lambda url: not url.startswith("https://"))
    folder = raw_folder(data_dir, dataset)
    all_names = ", ".join(f"{stem}.gz" for pair in RAW_FILES.values() for stem in pair)
    download_files(
        folder,
        [(f"{stem}.gz", md5s[f"{stem}.gz"]) for stem in missing],
        mirrors,
        timeout=timeout,
        verify=lambda data, name: decode_idx(Path(name), data, magic_for(name)),
        sizes=OFFICIAL_SIZES[dataset],
        deadline=deadline,
        offline_hint=f"To use files you have, put {all_names} (gzip or not) in {folder}/ "
        f"and run with --data.data_dir {data_dir} --data.download false",
    )
