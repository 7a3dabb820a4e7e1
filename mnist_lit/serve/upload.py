"""The picture of a ``POST /predict`` request: its raw body or the multipart/form-data field ``file``, within limits.

A body over ``--max_request_bytes`` is refused from its Content-Length or as soon as more has arrived, and is
not kept; a refused request's body is drained (up to :data:`DRAIN_BYTES`) so that the client, still sending,
receives the answer instead of a connection reset. A body that stops arriving for
:data:`~mnist_lit.limits.BODY_IDLE_SECONDS` is answered 408.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from mnist_lit.limits import BODY_IDLE_SECONDS

#: After refusing an over-limit body, read and discard up to this much more of it before answering (like
#: nginx's lingering close), so that a client still sending receives the 413 instead of a connection reset.
DRAIN_BYTES = 64 * 2**20


class RequestError(Exception):
    """A request the API refuses: ``status`` (4xx) and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def next_message(request: Request) -> MutableMapping[str, Any]:
    """The request's next ASGI message, within :data:`~mnist_lit.limits.BODY_IDLE_SECONDS`.

    Raises:
        RequestError: 408 when no part of the body arrived for that long (a stalled or malicious client would
            otherwise hold one of the gate's places for as long as it likes).
    """
    try:
        return await asyncio.wait_for(request.receive(), BODY_IDLE_SECONDS)
    except TimeoutError:
        raise RequestError(
            408, f"no part of the request body arrived for {BODY_IDLE_SECONDS:g} s; send the whole picture at once"
        ) from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``max_bytes``.

    A declared Content-Length is checked before anything is kept; a chunked body is counted while
    it arrives. An over-limit body is not kept: up to :data:`DRAIN_BYTES` more of it are read and
    discarded, then the 413 is raised.

    Raises:
        RequestError: 400 for an unreadable Content-Length or a client that went away, 408 for a body that
            stopped arriving (:func:`next_message`), 413 for an over-limit body.
    """
    declared = request.headers.get("content-length")
    refused = None
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > max_bytes:
            refused = f"(Content-Length {int(declared):,})"
    body, discarded, more_body = bytearray(), 0, True
    while more_body and discarded <= DRAIN_BYTES:
        message = await next_message(request)  # ASGI messages: no copy of the body beyond what is kept
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client closed the connection before sending the whole body")
        chunk, more_body = message.get("body", b""), message.get("more_body", False)
        if refused is None:
            body += chunk
            if len(body) > max_bytes:
                refused, body = f"(more than {max_bytes:,} bytes sent)", bytearray()
        else:
            discarded += len(chunk)
    if refused is not None:
        raise RequestError(413, f"request body over the limit of {max_bytes:,} bytes {refused}; send a smaller picture")
    return bytes(body)


async def discard_body(request: Request) -> None:
    """Read and drop up to :data:`DRAIN_BYTES` of a refused request's body, so that the client, still
    sending, receives the answer instead of a connection reset."""
    discarded, more_body = 0, True
    while more_body and discarded <= DRAIN_BYTES:
        try:
            message = await next_message(request)
        except RequestError:  # 408: answer the refusal now
            return
        if message["type"] == "http.disconnect":
            return
        discarded, more_body = discarded + len(message.get("body", b"")), message.get("more_body", False)


async def picture_from_request(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """(picture bytes, name for messages) from a raw body or the multipart field ``file``.

    Raises:
        RequestError: 413 over the limit, 400 empty body, malformed multipart, or no file in the form.
    """
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise RequestError(
                400,
                "empty request body; send a PNG or JPEG picture as the body or as the multipart/form-data field 'file'",
            )
        return body, "request body"

    async def replay() -> dict[str, Any]:  # the body already read, handed to Starlette's form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, receive=replay).form(max_files=1, max_fields=20) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
            if upload is None:
                raise RequestError(400, "multipart request without a file; send the picture in the field 'file'")
            data, name = await upload.read(), upload.filename or "uploaded file"
    except StarletteHTTPException as err:  # Starlette's multipart errors (e.g. a broken boundary)
        raise RequestError(400, f"malformed multipart/form-data request: {err.detail}") from None
    if not data:
        raise RequestError(400, f"{name}: empty file (0 bytes); choose a picture of a digit")
    return data, name
