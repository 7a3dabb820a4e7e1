"""The crops of concurrent ``POST /predict`` requests scored together: one forward pass of each network per batch.

At batch 1 the two small networks (the checkpoint's and the "digit or not" check of
:mod:`mnist_lit.pictures.digitness`) cost mostly PyTorch's per-call overhead, paid under Python's global lock
that the whole server shares; a batch of 16 crops costs about a third of that per crop
(``benchmarks/bench_serve.py``, docs/serving.md). :class:`CropBatcher` scores the crops of every request that
arrives while a forward pass runs in the next pass: a lone request is scored at once (no request waits for
company), and under load the batches grow by themselves, bounded by the requests the gate admits.

Written by hand (one small class): LitServe and Ray Serve batch this way, but either would replace the FastAPI
app with its body, pixel and concurrency limits and its one-line error answers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

#: Most crops in one forward pass (a picture has at most 10; the gate admits 10 pictures by default). Bounds the
#: pass's activations: the tutorial's network keeps about 100 kB of float32 activations per crop.
MAX_BATCH_CROPS = 256

Scores = tuple[torch.Tensor, ...]
ScoreFn = Callable[[torch.Tensor], Scores]


class CropBatcher:
    """``await batcher.score(pixels)``: the outputs of ``score_fn`` for these crops, computed in a shared batch.

    Args:
        score_fn: uint8 (N, 1, 28, 28) crops -> a tuple of tensors whose first dimension is N (e.g. float32
            (N, 10) probabilities and float32 (N,) P(digit)); run in one dedicated thread, one batch at a time.
        max_batch_crops: a batch takes waiting pictures, in arrival order, until it holds at least this many
            crops (a picture is never split).

    Attributes:
        pictures: pictures scored so far. batches: forward passes so far (``batches < pictures`` under load).
    """

    def __init__(self, score_fn: ScoreFn, max_batch_crops: int = MAX_BATCH_CROPS) -> None:
        self.score_fn, self.max_batch_crops = score_fn, max_batch_crops
        self.pictures = self.batches = 0
        self._waiting: deque[tuple[torch.Tensor, asyncio.Future[Scores]]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="mnist_lit-forward")

    async def score(self, pixels: torch.Tensor) -> Scores:
        """``score_fn(pixels)`` for uint8 (K, 1, 28, 28) crops, K >= 1, as rows of a batch shared with the
        requests waiting now.

        Raises:
            Exception: whatever ``score_fn`` raises on these crops scored alone (a batch that fails is scored
                again picture by picture, so a request fails only for its own crops).
        """
        future: asyncio.Future[Scores] = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    def _take(self) -> list[tuple[torch.Tensor, asyncio.Future[Scores]]]:
        """The waiting pictures of the next batch, oldest first; those whose request went away are dropped."""
        batch, crops = [], 0
        while self._waiting and crops < self.max_batch_crops:
            pixels, future = self._waiting.popleft()
            if not future.done():  # done: cancelled, the client closed the connection
                batch.append((pixels, future))
                crops += len(pixels)
        return batch

    async def _run(self) -> None:
        """Score batches while pictures wait. When a pass fails, each of its pictures is scored alone, so that
        only a picture the networks cannot take fails its request (500), not the others, and not the server."""
        while batch := self._take():
            try:
                await self._pass(batch)
            except Exception as err:
                if len(batch) == 1:
                    _fail(batch[0][1], err)
                    continue
                for item in batch:  # find the picture the networks cannot take: each one alone
                    try:
                        await self._pass([item])
                    except Exception as alone:
                        _fail(item[1], alone)

    async def _pass(self, batch: list[tuple[torch.Tensor, asyncio.Future[Scores]]]) -> None:
        """One forward pass over the crops of ``batch``; each picture's future gets the rows of its own crops."""
        pixels = torch.cat([crops for crops, _ in batch])
        outputs = await asyncio.get_running_loop().run_in_executor(self._thread, self.score_fn, pixels)
        self.batches, self.pictures = self.batches + 1, self.pictures + len(batch)
        start = 0
        for crops, future in batch:
            if not future.done():
                future.set_result(tuple(output[start : start + len(crops)] for output in outputs))
            start += len(crops)


def _fail(future: asyncio.Future[Scores], err: Exception) -> None:
    """Hand ``err`` to the request waiting on ``future``, unless it has gone away."""
    if not future.done():
        future.set_exception(err)
