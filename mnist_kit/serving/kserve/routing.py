"""Which version answers a kserve runtime's requests, changed live (a canary's stages): the default, what a request
naming no version gets, and at most one candidate, either a `shadow` (it reads a share of the default's pictures
and never answers) or a `canary` (it answers that share of the requests naming no version). A request naming a
version always gets that version.

One state per runtime. With several workers, each its own process, it is a small JSON file in the runtime's folder
(server.py's supervisor writes the first, from --shadow): the worker a management request reaches changes it under a
lock, writes it whole (files.write_json) and applies it before it answers; every other worker looks at the file
every C.ROUTING_POLL_S and applies a change on the event loop's thread, the one that runs the batches, so a batch is
answered wholly by the versions named when it began.
"""

import asyncio
import fcntl
import json
import logging
import os
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.files import write_json

log = logging.getLogger(__name__)
MODES = ("shadow", "canary")


class RoutingError(KitError):
    """A change that cannot be made; `status` the HTTP status that says so (400 a bad value, 404 no such version)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Routing:
    """The default version, and the candidate (None, or a version with its `mode` and `share` of requests)."""

    default: str
    candidate: str | None = None
    mode: str | None = None
    share: float | None = None

    def checked(self, served: list[str]) -> "Routing":
        """This state, if the runtime serves it; else RoutingError saying what is wrong."""
        for version in (self.default, self.candidate):
            if version is not None:
                check_served(version, served)
        if self.candidate is None:
            return replace(self, mode=None, share=None)
        if self.candidate == self.default:
            raise RoutingError(
                f"version {self.candidate} is the default: it answers already; a candidate is another served version "
                f"(served: {', '.join(served)}, the default {self.default})"
            )
        if self.mode not in MODES:
            raise RoutingError(f"mode must be shadow or canary, not {self.mode!r}")
        if not isinstance(self.share, float) or not 0 < self.share <= 1:
            raise RoutingError(f"share must be a number in (0, 1], not {self.share!r}")
        return self

    def promoted(self, version: str) -> "Routing":
        """`version` the default (set-default); the candidate stays one unless it is the version promoted."""
        return Routing(version) if version == self.candidate else replace(self, default=version)

    def as_dict(self) -> dict:
        return asdict(self)


def seed_routing(default: str, shadow: str | None, share: float) -> Routing:
    """The routing a runtime starts with: the command line's --shadow, if any, for its --shadow-share."""
    return Routing(default, shadow, "shadow", float(share)) if shadow else Routing(default)


def check_served(version: str, served: list[str]) -> None:
    if version not in served:
        raise RoutingError(f"version {version} is not served here (served: {', '.join(served)})", 404)


def share_of(text: str | None) -> float | None:
    """A share as a query gives it ("0.1"), or None when not given; RoutingError when it is no number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise RoutingError(f"share must be a number in (0, 1], not {text!r}") from None


class Routes:
    """One worker's copy of the runtime's routing `state`: `apply(state)` (Routed.follow) is called with each new
    one; `path`, the runtime's routing file (None: one worker, the state in memory only)."""

    def __init__(self, state: Routing, served: list[str], *, apply, path=None):
        self.served, self.apply, self.path = served, apply, Path(path) if path else None
        self.seen = None  # the file's identity when this worker last read it
        self.state = state.checked(served)
        apply(self.state)
        self.refresh()

    def identity(self) -> tuple | None:
        """What changes with every write: os.replace puts a new inode in place."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def refresh(self) -> None:
        """Apply the file's state if it changed since this worker read it (a stat, unless it did)."""
        if self.path is None:
            return
        seen = self.identity()
        if seen is None or seen == self.seen:
            return
        state = Routing(**read_json(self.path)).checked(self.served)
        self.seen = seen
        self.set(state)

    def set(self, state: Routing) -> None:
        if state != self.state:
            self.state = state
            self.apply(state)

    def change(self, update) -> Routing:
        """`update(state)` → the new state, checked (RoutingError), written for the other workers and applied here
        before this returns; from the file's latest, whichever worker wrote it."""
        with self.locked():
            self.refresh()
            state = update(self.state).checked(self.served)
            if self.path is not None:
                write_json(state.as_dict(), self.path)
                self.seen = self.identity()
            self.set(state)
        return state

    @contextmanager
    def locked(self):
        """One writer at a time over all the workers (a lock file beside the state; held for a write's length)."""
        if self.path is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    async def follow(self) -> None:
        """The worker's watch on the file, for as long as its event loop runs."""
        failures = 0
        while True:
            await asyncio.sleep(C.ROUTING_POLL_S)
            try:
                self.refresh()
            except (OSError, ValueError, TypeError, KitError):  # kept as it was; said once
                failures += 1
                if failures == 1:
                    log.exception("the routing file %s could not be applied: this worker keeps its routing", self.path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


class AsRole:
    """A version's batcher whose requests count in another role: a canary's answers to requests naming no version."""

    def __init__(self, batcher, counted):
        self.batcher, self.counted = batcher, counted

    async def submit(self, row: dict, headers: dict, sent: bytes | None = None):
        return await self.batcher.submit(row, headers, sent, counted=self.counted)

    async def run(self, work, *args):
        return await self.batcher.run(work, *args)


class Named:
    """A version's batcher for the requests that name it: answered as any, never read by a shadow. The routing,
    shadow and canary alike, is for the requests naming no version, the live traffic; one naming a version is
    someone's deliberate choice (an A/B test, the canary's MNIST guard), not traffic to judge a candidate on."""

    def __init__(self, batcher):
        self.batcher = batcher

    async def submit(self, row: dict, headers: dict, sent: bytes | None = None):
        return await self.batcher.submit(row, headers, sent, shadowed=False)

    async def run(self, work, *args):
        return await self.batcher.run(work, *args)


class Routed:
    """What a model of several versions does with the routing (MnistModel's, the tests' models'): it has `versions`
    (versions.Version by version) and `shadow_writer()`, and calls `start_routing` once they are loaded; `version`
    and `archive` are then the default's, `bare()` the version that answers a request naming none, `named(v)` one
    naming v."""

    canary, canary_share = None, 0.0

    def start_routing(self, state: Routing, *, path=None, seed=None) -> None:
        self.draw = random.Random(os.getpid() if seed is None else seed).random
        self.shadow_seed = seed
        self.by_name = {v: replace(served, batcher=Named(served.batcher)) for v, served in self.versions.items()}
        self.routes = Routes(state, list(self.versions), apply=self.follow, path=path)

    def follow(self, state: Routing) -> None:
        """Apply a state, on the event loop's thread: between two batches (a batch reads its shadow as it begins)."""
        default = self.versions[state.default]
        self.version, self.archive = state.default, default.archive
        shadow = self.shadow_for(state) if state.mode == "shadow" else None
        for served in self.versions.values():
            served.batcher.shadow = shadow if served is default else None
        self.canary, self.canary_share = None, state.share or 0.0
        if state.mode == "canary":
            from mnist_kit.serving.kserve import metrics  # here: the supervisor reads this module, no worker's

            candidate = self.versions[state.candidate]
            counted = metrics.Counted(state.candidate, "canary")
            self.canary = replace(candidate, batcher=AsRole(candidate.batcher, counted))

    def shadow_for(self, state: Routing):
        from mnist_kit.serving.kserve.shadow import Shadow

        return Shadow(
            self.versions[state.candidate].core,
            default_version=state.default,
            version=state.candidate,
            writer=self.shadow_writer(),
            share=state.share,
            seed=self.shadow_seed,
        )

    def named(self, version: str):
        """The version that answers a request naming it (None: not served), which no shadow reads."""
        return self.by_name.get(version)

    def bare(self):
        """The version that answers a request naming none: the default, or for the canary's share the candidate."""
        if self.canary is not None and self.draw() < self.canary_share:
            return self.canary
        return self.versions[self.version]
