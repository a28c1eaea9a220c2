"""The shadow, in process: another version reads the same decoded pictures as the default, in the same batch of the
same worker, with no second HTTP hop, and its answers are compared, never returned.

The default's batcher (batcher.py) decodes, infers and encodes a batch as usual and hands its replies out first;
then `Shadow.compare` runs the shadow's forward pass over the pictures of a share of the batch's requests (drawn per
request, from a generator seeded per worker) into a Batch of its own sharing the decoded requests. A picture is a
disagreement when the digits differ, or one side flags not_a_digit and the other does not; each goes to the
DisagreementWriter (disagreements.py: a thread of its own writes the store) with the bytes as sent: an image body's
own bytes, else the whole body, its picture's index in the answers. A shadow that fails costs its comparisons
(counted as its 5xx), never an answer.
"""

import json
import logging
import os
import random

from mnist_kit.serving.kserve import metrics
from mnist_kit.worker.core import Batch

log = logging.getLogger(__name__)


def answer_dict(answer, picture: int | None = None) -> dict:
    """What the store keeps of one answer: digit, confidence, flags (and which picture of several)."""
    kept = {"digit": answer.digit, "confidence": answer.confidence, "flags": list(answer.flags)}
    return kept if picture is None else {**kept, "picture": picture}


def differ(mine, theirs) -> bool:
    return mine.digit != theirs.digit or ("not_a_digit" in mine.flags) != ("not_a_digit" in theirs.flags)


def as_sent(row: dict, headers: dict, sent: bytes | None) -> tuple[bytes, str]:
    """A request's bytes as sent and their content type: the body the REST routes read (`sent`), a multipart form's
    picture field, else the body the core was handed (gRPC's v2 request as the kit reads it)."""
    if sent is not None:
        return sent, headers.get("content-type") or "application/octet-stream"
    for field in ("data", "file"):
        if isinstance(row.get(field), (bytes, bytearray)):
            return bytes(row[field]), (headers.get(field) or {}).get("content-type") or "application/octet-stream"
    body = row.get("body")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body), headers.get("content-type") or "application/octet-stream"
    return json.dumps(body).encode(), "application/json"


class Shadow:
    """`Shadow(core, default_version=..., version=..., writer=...)`: `version`'s core shadowing the default's for a
    `share` of requests; `writer` is a DisagreementWriter (or anything with its `submit`)."""

    def __init__(self, core, *, default_version: str, version: str, writer, share: float = 1.0, seed=None):
        self.core, self.default_version, self.version = core, default_version, version
        self.writer, self.share = writer, share
        self.draw = random.Random(os.getpid() if seed is None else seed).random
        self.counted = metrics.Counted(version, "shadow")
        pair = (default_version, version)
        self.comparisons = metrics.COMPARISONS.labels(*pair)
        self.disagreements = metrics.DISAGREEMENTS.labels(*pair)
        self.dropped = metrics.DROPPED.labels(*pair)
        self.failures = 0

    def chosen(self, batch: Batch, shadowed: list[bool] | None = None) -> list[tuple[int, int, int]]:
        """The requests of the batch the shadow reads, of those it may (`shadowed`: all, unless it says which): a
        share drawn per request; (index, first picture's index in the answers, pictures)."""
        picked, first = [], 0
        for n, request in enumerate(batch.requests):
            count = len(request.images)
            allowed = shadowed is None or shadowed[n]
            if count and allowed and (self.share >= 1 or self.draw() < self.share):
                picked.append((n, first, count))
            first += count
        return picked

    def compare(self, batch: Batch, sent: list[tuple[dict, dict, bytes | None]], shadowed=None) -> None:
        """Read the chosen requests' pictures with the shadow's core, compare, and keep each disagreement with its
        request as sent (`sent`: each request's row, headers and body bytes, as the batcher was handed them;
        `shadowed`: which it may read, all unless given). Whatever fails here is the shadow's failure, counted and
        logged: the default's answers are already out."""
        picked = self.chosen(batch, shadowed)
        if not picked:
            return
        try:
            theirs = self.core.infer(Batch([batch.requests[n] for n, _, _ in picked])).answers
            answers = iter(theirs)
            for n, first, count in picked:
                for k in range(count):
                    mine, other = batch.answers[first + k], next(answers)
                    if differ(mine, other):
                        self.keep(sent[n], mine, other, picture=k if count > 1 else None)
            compared = sum(count for _, _, count in picked)
            read = [answer.read() for answer in theirs]
            self.counted.answered([200] * len(picked), compared, flags=[a.flags for a in theirs], read=read)
            self.comparisons.inc(compared)
        except Exception:
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:  # the first, then one line per thousand
                log.exception("the shadow version %s failed (%d batches so far)", self.version, self.failures)
            self.counted.answered([500] * len(picked), 0)

    def keep(self, request: tuple, mine, other, *, picture: int | None) -> None:
        self.disagreements.inc()
        image, content_type = as_sent(*request)
        stored = self.writer.submit(
            image,
            content_type=content_type,
            default_version=self.default_version,
            default_answer=answer_dict(mine, picture),
            shadow_version=self.version,
            shadow_answer=answer_dict(other, picture),
        )
        if not stored:
            self.dropped.inc()
