"""The kserve runtime's micro-batcher (serving/kserve/batcher.py): a lone request runs at once, requests that arrive
while a batch runs form the next one (no timer), batches are capped, and a failing batch fails only its own
requests."""

import asyncio

import pytest

from mnist_kit.serving.kserve.batcher import MicroBatcher


class Core:
    """A stand-in serving core that records its batches: decode → infer → encode as the real one chains them."""

    def __init__(self, fail_on=None):
        self.batches, self.fail_on = [], fail_on

    def decode(self, rows, headers):
        if self.fail_on in [row["body"] for row in rows]:
            raise RuntimeError("a bug")
        self.batches.append([row["body"] for row in rows])
        return rows

    def infer(self, rows):
        return rows

    def encode(self, rows):
        return [f"reply {row['body']}" for row in rows]


def run_all(batcher, bodies):
    async def main():
        return await asyncio.gather(*(batcher.submit({"body": b}, {}) for b in bodies), return_exceptions=True)

    return asyncio.run(main())


@pytest.mark.unit
def test_a_lone_request_runs_at_once_in_a_batch_of_its_own():
    seen = []
    core = Core()
    batcher = MicroBatcher(core, on_batch=lambda size, waited_ms: seen.append((size, waited_ms)))
    assert run_all(batcher, [1]) == ["reply 1"]
    assert core.batches == [[1]] and seen[0][0] == 1 and seen[0][1] < 50


@pytest.mark.unit
def test_requests_waiting_together_share_batches_up_to_the_cap():
    core = Core()
    replies = run_all(MicroBatcher(core, max_requests=4), list(range(10)))
    assert replies == [f"reply {i}" for i in range(10)]
    assert [len(b) for b in core.batches] == [4, 4, 2] and sum(core.batches, []) == list(range(10))


@pytest.mark.unit
def test_a_failing_batch_fails_its_own_requests_and_not_the_next():
    core = Core(fail_on=1)
    replies = run_all(MicroBatcher(core, max_requests=2), [0, 1, 2, 3])
    assert [type(r).__name__ for r in replies[:2]] == ["RuntimeError", "RuntimeError"]
    assert replies[2:] == ["reply 2", "reply 3"]
