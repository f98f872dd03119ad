"""An asyncio micro-batcher: concurrent requests share one encode + one FAISS search.

Encoding one query at a time leaves most of a CPU's matrix throughput unused and serializes requests
behind each other; collecting the queries that arrive within a few milliseconds and embedding them as
one batch keeps latency low while throughput grows with concurrency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# run_batch(texts, k) -> one result per text, in order.
BatchFunction = Callable[[list[str], int], Sequence[Any]]


@dataclass
class _Pending:
    texts: list[str]
    k: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Queue texts from many coroutines and run them through ``run_batch`` together.

    A batch closes when it holds ``max_batch_size`` texts or ``max_wait_s`` after its first request;
    a request larger than ``max_batch_size`` runs as a batch of its own. ``run_batch`` runs in one
    dedicated worker thread (so the event loop keeps accepting requests meanwhile) with the largest
    ``k`` of the batch; callers trim their own results to their ``k``.
    """

    def __init__(
        self,
        run_batch: BatchFunction,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: list[_Pending] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="coderag-batch")

    async def submit(self, texts: list[str], k: int) -> list[Any]:
        """Results of ``run_batch`` for ``texts`` (computed with some k' >= ``k``)."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._work())
        pending = _Pending(list(texts), k, loop.create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [self._carry.pop() if self._carry else await self._queue.get()]
        size = len(batch[0].texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if size + len(item.texts) > self.max_batch_size:
                # Does not fit: it opens the next batch instead of overfilling this one.
                self._carry.append(item)
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            texts = [t for item in batch for t in item.texts]
            k = max(item.k for item in batch)
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, texts, k)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(texts))
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(list(results[offset : offset + len(item.texts)]))
                offset += len(item.texts)

    def close(self) -> None:
        """Stop the worker task and its thread."""
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
