"""Admission for ``POST /predict``: a few pictures decoded at once, a few more waiting, the rest refused at once.

Decoding a picture takes memory in proportion to its pixels (an RGBA picture up to about 13 bytes
a pixel while it is read: ~0.3 GB for 24 megapixels), so concurrent decodes, not requests, are
what must be bounded. :class:`PredictionGate` lets ``max_concurrent`` requests decode and cut out
their digits at a time (an ``asyncio.Semaphore``; the crops, 784 bytes each, are then scored in shared
batches by :mod:`mnist_lit.serve.batcher`, outside the turn); up to ``max_waiting`` more are admitted, read their body (at
most ``--max_request_bytes`` each) and wait for a turn; any request beyond that is answered 503
before its body is kept. ``GET /health`` and the page never pass the gate, so they answer during
a burst.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ServerBusy(Exception):
    """Every turn is taken and the waiting line is full; the message is one line for ``{"error": ...}``."""


class PredictionGate:
    """At most ``max_concurrent`` holders of :meth:`turn` at a time, at most ``max_waiting`` admitted behind them.

    Args:
        max_concurrent: requests decoding their picture at once, >= 1.
        max_waiting: requests admitted to wait for a turn, >= 0; more get :class:`ServerBusy`.

    Use: ``async with gate.admitted(): ...read the body...; async with gate.turn(): ...decode...``.
    """

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        if max_concurrent < 1 or max_waiting < 0:
            raise ValueError(
                f"max_concurrent must be >= 1 and max_waiting >= 0, got {max_concurrent} and {max_waiting}"
            )
        self.max_concurrent, self.max_waiting = max_concurrent, max_waiting
        self.admitted_now = 0
        self._turns = asyncio.Semaphore(max_concurrent)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Count this request in, or raise :class:`ServerBusy` if ``max_concurrent + max_waiting`` are in."""
        if self.admitted_now >= self.max_concurrent + self.max_waiting:
            raise ServerBusy(
                f"server busy: {self.max_concurrent} pictures are being processed and {self.max_waiting} "
                "are waiting; retry in a few seconds"
            )
        self.admitted_now += 1
        try:
            yield
        finally:
            self.admitted_now -= 1

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for one of the ``max_concurrent`` turns and hold it for the block."""
        async with self._turns:
            yield
