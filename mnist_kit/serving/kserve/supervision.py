"""The kserve runtime's supervisor (server.py with --workers N): N worker processes, all on the same ports, each
replaced when it dies while the runtime is not stopping, and every stop signal handed on to the workers of now.

A worker that dies (the OOM killer's SIGKILL, a crash) leaves the others serving: the kernel stops handing
connections to its sockets once it is gone, and what it had in flight is lost. The supervisor logs one line (which
worker, killed by which signal or exited with which code, and that it replaces it) and puts another in its place: the
spare, where there is one, a worker started beside the N that has loaded the archive and waits, unbound, to be told
to serve (it answers within a fraction of a second, where a worker started then takes seconds, more on cores busy
with the load); a new spare starts C.KSERVE_SPARE_AFTER_S later, once the load has the cores back. Without a spare,
or with one still dying at its start, a new worker is started. One that keeps dying soon after its start is
replaced after a back-off (`restart_delay`), and left dead after C.KSERVE_RESTART_LIMIT such deaths in a row, so
that a worker that cannot start does not spin and a runtime that cannot start ends. A stop signal (SIGTERM, SIGINT,
SIGUSR1's drain) ends the restarts, and reaches the spare too.

Restarts (a spare's too) are counted in `mnist_kit_worker_restarts_total{reason="signal"|"exit"}`, in the workers'
Prometheus folder like their own figures, so that /metrics adds it up with theirs; a dead worker's live gauges are
removed from there (its counters stay, and still add up).
"""

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from mnist_kit import constants as C

log = logging.getLogger(__name__)

# The signals a supervisor hands on to its workers. Each worker starts with them blocked and unblocks them once its
# handlers are set (server.main): one sent while a worker is still starting is then handled, not fatal.
STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# What a spare reads to bind and serve.
SERVE = b"SERVE\n"
# KServe's layout of a log line, the workers', for the supervisor's lines in the same output.
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s %(message)s"


def restart_delay(quick_deaths: int) -> float | None:
    """Seconds to wait before starting a worker again after its `quick_deaths`-th death in a row within
    C.KSERVE_RESTART_STABLE_S of its start (0 when it had lived longer): none at first, then C.KSERVE_RESTART_BACKOFF_S
    doubling; None once it has died C.KSERVE_RESTART_LIMIT times so: a worker that cannot start."""
    if quick_deaths >= C.KSERVE_RESTART_LIMIT:
        return None
    if quick_deaths <= 1:
        return 0.0
    return C.KSERVE_RESTART_BACKOFF_S * 2 ** (quick_deaths - 2)


def cause(code: int) -> str:
    """How a worker ended, from its return code (a signal's is negative)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


@dataclass
class Slot:
    """One of the N workers, or the spare, across its restarts."""

    number: int  # 0: the spare
    process: subprocess.Popen | None = None
    started: float = 0.0  # monotonic clock
    quick_deaths: int = 0
    restart_at: float | None = None  # when a restart is due
    reason: str = ""  # what the restart counts as: "signal" or "exit"
    code: int | None = None  # how it ended for good: at the stop, or left dead


class Supervisor:
    """`count` workers running `command` in `env`, whose $PROMETHEUS_MULTIPROC_DIR becomes this process's too, and
    a spare running `spare` (None: none), which loads and then reads a line from its standard input: SERVE to bind
    and serve, nothing (the supervisor gone) to end. `run` returns once the workers have all ended after a stop
    signal (or all been left dead), with the exit code of the one that ended worst (as before restarts)."""

    def __init__(self, command: list[str], count: int, *, env: dict, spare: list[str] | None = None):
        self.command, self.env, self.spare_command = command, env, spare
        self.folder = env["PROMETHEUS_MULTIPROC_DIR"]
        self.slots = [Slot(number) for number in range(1, count + 1)]
        self.spare = Slot(0) if spare else None
        self.received: list[int] = []  # stop signals not yet handed on
        self.stopping = False
        # Before this process first imports prometheus_client, which chooses where values go when imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.folder
        from prometheus_client import Counter, multiprocess

        self.mark_process_dead = multiprocess.mark_process_dead
        restarts = Counter(
            "mnist_kit_worker_restarts",
            "Workers started again after dying, by how they died: killed by a signal, or exited",
            ["reason"],
            registry=None,  # written to this process's file in the folder, which every worker's /metrics reads
        )
        self.restarts = {reason: restarts.labels(reason) for reason in ("signal", "exit")}  # at 0 from the start

    def run(self) -> int:
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
            log.addHandler(handler)
        for signum in STOPS:
            signal.signal(signum, lambda signum, frame: self.received.append(signum))
        for slot in self.slots:
            self.start(slot)
        if self.spare:
            self.start(self.spare)
        while any(slot.process is not None or slot.restart_at is not None for slot in self.slots):
            self.hand_on()
            for slot in self.every():
                if slot.process is not None and slot.process.poll() is not None:
                    self.ended(slot)
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    if slot.reason:  # not a used spare's slot, filled again
                        self.restarts[slot.reason].inc()
                    self.replace(slot)
            time.sleep(C.KSERVE_SUPERVISE_POLL_S)
        self.end_spare()
        return max((slot.code for slot in self.slots if slot.code is not None), key=abs, default=0)

    def every(self) -> list[Slot]:
        return self.slots + ([self.spare] if self.spare else [])

    def hand_on(self) -> None:
        """The stop signals received since the last look, to every worker of now; no restart from the first on."""
        while self.received:
            signum = self.received.pop(0)
            self.stopping = True
            for slot in self.every():
                slot.restart_at = None
                if slot.process is not None:
                    slot.process.send_signal(signum)

    def replace(self, slot: Slot) -> None:
        """A worker in `slot`: the spare, told to serve, where it runs; else a new one. A used spare's own slot is
        filled again C.KSERVE_SPARE_AFTER_S later."""
        spare = self.spare
        if slot is not spare and spare is not None and spare.process is not None:
            try:
                spare.process.stdin.write(SERVE)
                spare.process.stdin.close()
            except OSError:  # it died since the last look: the next look tells how
                pass
            else:
                slot.process, slot.started, slot.restart_at = spare.process, time.monotonic(), None
                spare.process, spare.quick_deaths = None, 0
                spare.reason, spare.restart_at = "", time.monotonic() + C.KSERVE_SPARE_AFTER_S
                pid = slot.process.pid
                log.warning(
                    "worker %d of %d: the spare (pid %d) serves in its place", slot.number, len(self.slots), pid
                )
                return
        self.start(slot)

    def start(self, slot: Slot) -> None:
        """A worker in `slot` (the spare's, with a pipe to its standard input), started with the stop signals blocked
        (a child inherits the mask)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            if slot is self.spare:
                slot.process = subprocess.Popen(self.spare_command, env=self.env, stdin=subprocess.PIPE)
            else:
                slot.process = subprocess.Popen(self.command, env=self.env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        slot.started, slot.restart_at = time.monotonic(), None

    def end_spare(self) -> None:
        """The spare, once no worker is left to replace: its pipe closed, it ends (a stop signal has already
        reached it where there was one)."""
        if self.spare is None or self.spare.process is None:
            return
        process, self.spare.process = self.spare.process, None
        process.stdin.close()
        try:
            process.wait(timeout=C.KSERVE_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.mark_process_dead(process.pid, self.folder)

    def ended(self, slot: Slot) -> None:
        process, lived = slot.process, time.monotonic() - slot.started
        code, slot.process = process.returncode, None
        self.mark_process_dead(process.pid, self.folder)  # its live gauges go; its counters stay in the sums
        name = f"worker {slot.number} of {len(self.slots)}" if slot.number else "the spare"
        name += f" (pid {process.pid})"
        if self.stopping:
            slot.code = code if slot.number else None
            if code:
                log.warning("%s %s while the runtime stops", name, cause(code))
            return
        slot.quick_deaths = slot.quick_deaths + 1 if lived < C.KSERVE_RESTART_STABLE_S else 0
        delay = restart_delay(slot.quick_deaths)
        if delay is None:
            slot.code = code if slot.number else None
            log.warning(  # not ERROR: a failed start's message quotes the log's last error, the worker's own
                "%s %s after %.1f s, dying %d times in a row within %d s of its start: not restarting it",
                *(name, cause(code), lived, slot.quick_deaths, C.KSERVE_RESTART_STABLE_S),
            )
            return
        slot.reason, slot.restart_at = ("signal" if code < 0 else "exit"), time.monotonic() + delay
        when = f" in {delay:g} s" if delay else ""
        log.warning("%s %s after %.1f s: restarting it%s", name, cause(code), lived, when)
