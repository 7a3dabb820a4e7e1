"""Download IDX files from a list of mirrors, bounded in size and time; verified, then renamed into place.

Why not ``torchvision.datasets.utils.download_url``: it has no timeout (a dead mirror can hang a
job forever), reads whatever a server sends, and writes straight to the final file name, so a
killed download leaves a half-written file under the real name. Here a file appears under its
final name only once it is complete and verified; every failure (HTTP error, TLS error, timeout,
refused connection, an HTML page instead of data, a truncated, oversized or corrupted body) is
logged with its URL and the next mirror is tried.

Bounds: each body is read up to its known size (:data:`OFFICIAL_SIZES`; other files
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
from pathlib import Path

from mnist_lit.atomic import atomic_write
from mnist_lit.errors import DownloadError
from mnist_lit.limits import DOWNLOAD_DEADLINE, DOWNLOAD_TIMEOUT, MAX_DOWNLOAD_BYTES

log = logging.getLogger(__name__)

#: Sent as User-Agent; some mirrors refuse Python's default one. torchvision sends the same.
USER_AGENT = "pytorch/vision"
#: Seconds allowed to connect and for each read of the body (no progress that long = failure).
DEFAULT_TIMEOUT = DOWNLOAD_TIMEOUT
CHUNK_SIZE = 1 << 20  # bytes per read
#: Sizes in bytes of the official ``.gz`` files, which torchvision's ``resources`` give md5s for (the sizes
#: torchvision's own downloads report; MNIST's t10k files checked here against ../shared/data/mnist-10k).
OFFICIAL_SIZES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": 26_421_880,
        "train-labels-idx1-ubyte.gz": 29_515,
        "t10k-images-idx3-ubyte.gz": 4_422_102,
        "t10k-labels-idx1-ubyte.gz": 5_148,
    },
}


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


def fetch_file(
    url: str,
    target: Path,
    md5: str | None,
    timeout: float = DEFAULT_TIMEOUT,
    verify: Callable[[bytes, str], None] | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    deadline: float | None = None,
) -> None:
    """Download ``url`` and write it to ``target`` only once it is complete and verified.

    The body is read into memory, at most ``max_bytes`` of it (MNIST's largest file is 9.9 MB):
    a Content-Length above it is refused before reading, and a body that goes on past it is cut
    off there. It is then checked (complete against Content-Length, not an HTML page, ``md5`` when
    given, then ``verify(data, target.name)``) and written with :func:`mnist_lit.atomic.atomic_write`
    (temporary name, fsync, rename). On any failure ``target`` is left as it was and no temporary
    file remains.

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
    if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise _BadResponse("an HTML page instead of data")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if md5 is not None and digest != md5:
        raise _BadResponse(f"md5 {digest} of {len(data)} bytes, expected {md5} (truncated or damaged)")
    if verify is not None:
        try:
            verify(bytes(data), target.name)
        except ValueError as err:
            raise _BadResponse(f"not a valid file: {err}") from None
    with atomic_write(target) as handle:
        handle.write(data)


def download_files(
    folder: str | Path,
    files: Sequence[tuple[str, str | None]],
    mirrors: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    verify: Callable[[bytes, str], None] | None = None,
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
        sizes: each file's size in bytes, where known (e.g. :data:`OFFICIAL_SIZES`); no more is read.
            Files not in it are read up to :data:`mnist_lit.limits.MAX_DOWNLOAD_BYTES`.
        deadline: seconds for the whole call; no request starts or waits past it.

    Returns:
        The paths of the downloaded files, in the order of ``files``.

    Raises:
        DownloadError: some file came from no mirror; one line with each mirror's reason and ``offline_hint``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    ends_at = time.monotonic() + deadline
    done, reasons, dead = [], {}, set()
    for name, md5 in files:
        for i, mirror in enumerate(mirrors):
            if mirror in dead or time.monotonic() >= ends_at:
                continue
            url, target = mirror + name, folder / name
            log.info("Downloading %s to %s", url, target)
            try:
                fetch_file(url, target, md5, timeout, verify, (sizes or {}).get(name, MAX_DOWNLOAD_BYTES), ends_at)
            except _DeadlinePassed:
                log.warning("Download stopped: %s: the deadline of %g s passed", url, deadline)
                continue
            except (OSError, http.client.HTTPException, _BadResponse, ValueError) as err:
                reason = describe_failure(err, timeout)
                if reason not in reasons.setdefault(mirror, []):
                    reasons[mirror].append(reason)
                if unreachable(err):
                    dead.add(mirror)
                more = "trying the next mirror" if i + 1 < len(mirrors) else "no more mirrors"
                log.warning("Download failed: %s: %s; %s", url, reason, more)
                continue
            log.info("Downloaded and verified %s", target)
            done.append(target)
            break
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        why = "; ".join(f"{mirror}: {', '.join(reasons[mirror])}" for mirror in mirrors if mirror in reasons)
        if time.monotonic() >= ends_at:
            why = f"{why}; " * bool(why) + f"stopped at the deadline of {deadline:g} s (--data.download_deadline)"
        raise DownloadError(
            f"could not download {', '.join(missing)} ({why or 'no mirrors configured'}). {offline_hint}".strip()
        )
    return done
