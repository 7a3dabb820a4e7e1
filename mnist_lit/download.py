"""Download IDX files from a list of mirrors: timeout per request, temporary name, verify, then rename.

Why not ``torchvision.datasets.utils.download_url``: it has no timeout (a dead mirror can hang a
job forever) and writes straight to the final file name, so a killed download leaves a
half-written file under the real name. Here a file appears under its final name only once it
is complete and verified; every failure (HTTP error, TLS error, timeout, refused connection,
an HTML page instead of data, a truncated or corrupted body) is logged with its URL and the next
mirror is tried.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from mnist_lit.atomic import atomic_write
from mnist_lit.data import DataError

log = logging.getLogger(__name__)

#: Sent as User-Agent; some mirrors refuse Python's default one. torchvision sends the same.
USER_AGENT = "pytorch/vision"
#: Seconds allowed to connect and for each read of the body (no progress that long = failure).
DEFAULT_TIMEOUT = 30.0
CHUNK_SIZE = 1 << 20  # bytes per read


class DownloadError(DataError):
    """No mirror delivered a verified file; the message lists the URLs tried and what to place by hand."""


class _BadResponse(Exception):
    """One mirror's answer is unusable (HTML, truncated, wrong md5, not IDX); the message says why."""


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
    if isinstance(err, _BadResponse):
        return str(err)
    return f"{type(err).__name__}: {err}"


def fetch_file(url: str, target: Path, md5: str | None, timeout: float = DEFAULT_TIMEOUT,
               verify: Callable[[bytes, str], None] | None = None) -> None:
    """Download ``url`` and write it to ``target`` only once it is complete and verified.

    The body is read into memory (MNIST's largest file is 9.9 MB), checked (complete against
    Content-Length, not an HTML page, ``md5`` when given, then ``verify(data, target.name)``)
    and written with :func:`mnist_lit.atomic.atomic_write` (temporary name, fsync, rename). On
    any failure ``target`` is left as it was and no temporary file remains.

    Args:
        url: the file's URL.
        target: final path.
        md5: expected hex md5 of the bytes, or ``None`` to skip that check.
        timeout: seconds for connecting and for each read.
        verify: extra check of the complete body; raises ``ValueError`` to reject it.

    Raises:
        urllib.error.URLError, OSError, http.client.HTTPException: the request failed.
        _BadResponse: the answer is not the file (HTML, truncated, wrong md5, rejected by ``verify``).
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        content_type = response.headers.get_content_type()
        if content_type == "text/html":
            raise _BadResponse(f"an HTML page instead of data (Content-Type {content_type})")
        length = response.headers.get("Content-Length")
        data = bytearray()
        while chunk := response.read(CHUNK_SIZE):
            data += chunk
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


def download_files(folder: str | Path, files: Sequence[tuple[str, str | None]], mirrors: Sequence[str],
                   timeout: float = DEFAULT_TIMEOUT, verify: Callable[[bytes, str], None] | None = None,
                   offline_hint: str = "") -> list[Path]:
    """Download each file from the first mirror that delivers it verified.

    For each ``(name, md5)`` the URLs ``mirror + name`` are tried in order; each failure is
    logged (WARNING, naming the URL and the reason) and the next mirror is tried. Files are
    written by :func:`fetch_file` (temporary name, verified, renamed).

    Args:
        folder: where the files go (created if needed).
        files: ``(file name, expected md5 or None)`` pairs, e.g. torchvision's ``MNIST.resources``.
        mirrors: base URLs ending in ``/`` (a missing ``/`` is added).
        timeout: seconds for connecting and for each read, per request.
        verify: extra check ``verify(data, file_name)`` of each complete body (e.g. its IDX
            structure); raises ``ValueError`` to reject it.
        offline_hint: appended to the error message (e.g. which files to place by hand).

    Returns:
        The paths of the downloaded files, in the order of ``files``.

    Raises:
        DownloadError: some file came from no mirror; one line listing every URL tried, with
            its reason, and ``offline_hint``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    done, failed = [], []
    for name, md5 in files:
        target = folder / name
        for i, mirror in enumerate(mirrors):
            url = mirror + name
            log.info("Downloading %s to %s", url, target)
            try:
                fetch_file(url, target, md5, timeout, verify)
            except (OSError, http.client.HTTPException, _BadResponse, ValueError) as err:
                reason = describe_failure(err, timeout)
                failed.append(f"{url} ({reason})")
                more = "trying the next mirror" if i + 1 < len(mirrors) else "no more mirrors"
                log.warning("Download failed: %s: %s; %s", url, reason, more)
                continue
            log.info("Downloaded and verified %s", target)
            done.append(target)
            break
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        tried = "; ".join(failed) if failed else "no mirrors configured"
        raise DownloadError(f"could not download {', '.join(missing)} from any mirror (tried: {tried}). "
                            f"{offline_hint}".strip())
    return done
