"""Batching for runtimes without a batcher of their own (KServe's ModelServer has none for v2): requests of one
process share forward passes of the serving core, and a lone request never waits for company.

The first request after a pause is run at once; those that arrive while a batch runs form the next batch, up to
C.BATCH_SIZE requests, as TorchServe's batchSize caps a batch: no timer, so concurrency 1 pays no batch delay
(TorchServe's maxBatchDelay is at least 1 ms) and concurrency 32 fills its batches by itself. A batch runs on the
event loop's own thread: a batch of a worker's pictures costs about a millisecond at most, and handing each one to
another thread and back cost more than its own forward pass at concurrency 1 (docs/PERFORMANCE.md). Between
batches the loop reads what has arrived. Explanations, which take seconds, run in a thread of their own.

With a shadow (shadow.py), the batch's replies go out first; the shadow then reads the same decoded pictures before
the next batch starts.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from mnist_kit import constants as C
from mnist_kit.worker.core import Core, Reply


class MicroBatcher:
    """`on_batch(size, waited_ms)` is told each batch's size and how long its oldest request waited for it;
    `counted` (metrics.Counted) each batch's statuses, pictures and latencies (a request's own, where submit names
    one: a canary's); `shadow` (shadow.Shadow), changed live by the routing, reads each batch's decoded pictures
    after its replies; `drift` (metrics.Drifting, where the archive has a baseline) is told the live pictures each
    batch answered."""

    def __init__(
        self,
        core: Core,
        max_requests: int = C.BATCH_SIZE,
        on_batch=lambda size, waited_ms: None,
        *,
        counted=None,
        shadow=None,
        drift=None,
    ):
        self.core, self.max_requests, self.on_batch = core, max_requests, on_batch
        self.counted, self.shadow, self.drift = counted, shadow, drift
        self.pending: list[tuple[dict, dict, asyncio.Future, float, bytes | None, object, bool]] = []
        self.running = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mnist-core")

    async def submit(
        self, row: dict, headers: dict, sent: bytes | None = None, *, counted=None, shadowed: bool = True
    ) -> Reply:
        """One request (its body fields and headers, as Core.decode takes them; `sent`, its body's bytes as sent,
        for a shadow's records; `counted`, the role its answer counts in, if not the batcher's; `shadowed`, whether a
        shadow may read it) → its Reply, batched with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((row, headers, future, time.perf_counter(), sent, counted or self.counted, shadowed))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await future

    async def run(self, work, *args):
        """Long work of the core (explanations) in its own thread, so the event loop keeps answering."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_requests], self.pending[self.max_requests :]
                shadow = self.shadow  # as the batch begins: a routing change applies from the next one
                self.on_batch(len(batch), 1000 * (time.perf_counter() - batch[0][3]))
                rows, headers = [entry[0] for entry in batch], [entry[1] for entry in batch]
                try:
                    decoded = self.core.infer(self.core.decode(rows, headers))
                    replies = self.core.encode(decoded)
                except Exception as e:  # a bug of ours fails this batch's requests, not the next ones
                    decoded, replies = None, [e] * len(batch)
                for (_, _, future, *_), reply in zip(batch, replies):
                    if future.done():  # a client that went away cancelled its future
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
                counting = self.counted is not None or self.drift is not None
                if counting or any(entry[5] is not None for entry in batch):
                    self._count(batch, decoded, replies)
                if shadow is not None and decoded is not None:
                    await asyncio.sleep(0)  # the replies go out first: the shadow adds no latency to them
                    sent = [(row, h, body) for row, h, _, _, body, _, _ in batch]
                    shadow.compare(decoded, sent, [entry[6] for entry in batch])
                if self.drift is not None and self.drift.due():  # at most every DRIFT_INTERVAL_S, replies out
                    await asyncio.sleep(0)
                    self.drift.publish()
                await asyncio.sleep(0)  # the loop reads what arrived meanwhile: the next batch
        finally:
            self.running = False

    def _count(self, batch: list, decoded, replies: list) -> None:
        """Each request counted in its role (metrics.Counted): its status, its pictures' flags and answers where
        answered 200, why it was refused where it was, how long it took; and the pictures answered 200 to requests
        naming no version (the live traffic, which a shadow may read) into the version's drift window."""
        now = time.perf_counter()
        statuses = [500 if isinstance(reply, Exception) else reply.status for reply in replies]
        answered = [[] for _ in batch]  # each request's pictures, their Answers and those read, if answered 200
        if decoded is not None:
            answers = iter(decoded.answers)
            for n, (request, status) in enumerate(zip(decoded.requests, statuses)):
                mine = [(picture, next(answers)) for picture in request.images]
                if status == 200:
                    answered[n] = [(picture, answer, answer.read()) for picture, answer in mine]
        roles: dict = {}  # Counted → (statuses, flags, (digit, confidence)s, seconds waited, reasons refused)
        live = []
        for entry, status, reply, mine in zip(batch, statuses, replies, answered):
            if entry[6]:
                live.extend(mine)
            if entry[5] is not None:
                counted = roles.setdefault(entry[5], ([], [], [], [], []))
                counted[0].append(status)
                counted[1].extend(answer.flags for _, answer, _ in mine)
                counted[2].extend(read for _, _, read in mine)
                counted[3].append(now - entry[3])
                if status != 200:
                    counted[4].append(refused_for(status, reply))
        for counted, (its_statuses, flags, read, waited, reasons) in roles.items():
            counted.answered(its_statuses, len(read), flags=flags, waited=waited, read=read, reasons=reasons)
        if self.drift is not None and live:
            self.drift.add([picture.pixels for picture, _, _ in live], [read for _, _, read in live])


def refused_for(status: int, reply) -> str:
    """A refused request's reason (mnist_kit_rejected_total): its InputError's for a 4xx, "internal" for a 5xx."""
    if status >= 500 or isinstance(reply, Exception):
        return "internal"
    return reply.reason or "invalid"
