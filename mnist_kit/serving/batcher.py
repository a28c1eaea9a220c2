"""Batching for runtimes without a batcher of their own (KServe's ModelServer has none for v2): requests of one
process share forward passes of the serving core, and a lone request never waits for company.

The first request after a pause is run at once; those that arrive while a batch runs form the next batch, up to
C.BATCH_SIZE requests, as TorchServe's batchSize caps a batch. So concurrency 1 pays no batch delay (TorchServe's
maxBatchDelay is at least 1 ms) and concurrency 32 runs batches of up to 16. The core runs in one thread beside the
event loop, which keeps accepting requests meanwhile.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from mnist_kit import constants as C
from mnist_kit.worker.core import Core, Reply


class MicroBatcher:
    def __init__(self, core: Core, max_requests: int = C.BATCH_SIZE, on_batch=lambda size: None):
        self.core, self.max_requests, self.on_batch = core, max_requests, on_batch
        self.pending: list[tuple[dict, dict, asyncio.Future]] = []
        self.running = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mnist-core")

    async def submit(self, row: dict, headers: dict) -> Reply:
        """One request (its body fields and headers, as Core.decode takes them) → its Reply, batched with whatever
        else is waiting."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((row, headers, future))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await future

    async def run(self, work, *args):
        """Other work of the core (explanations) in its thread, so the event loop never computes."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_requests], self.pending[self.max_requests :]
                self.on_batch(len(batch))
                try:
                    replies = await self.run(self._predict, [r for r, _, _ in batch], [h for _, h, _ in batch])
                except Exception as e:  # a bug of ours fails this batch's requests, not the next ones
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, _, future), reply in zip(batch, replies):
                    if not future.done():  # a client that went away cancelled its future
                        future.set_result(reply)
        finally:
            self.running = False

    def _predict(self, rows: list[dict], headers: list[dict]) -> list[Reply]:
        return self.core.encode(self.core.infer(self.core.decode(rows, headers)))
