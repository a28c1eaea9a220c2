"""A kserve worker that dies comes back, and says so (serving/kserve/supervision.py): the supervisor logs which worker
died and how, starts another (at once, then with a back-off while it keeps dying at its start), counts it in
`mnist_kit_worker_restarts_total`, and still hands every stop signal on to the workers of now. The back-off on its
own; the supervisor over stand-in workers (a few lines of Python each); then a real runtime of two workers under
load, one of them killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import psutil
import pytest
from conftest import DIGITS
from prometheus_client.parser import text_string_to_metric_families

from mnist_kit import constants as C
from mnist_kit.deploy.rollout import Load
from mnist_kit.serving.kserve.launcher import PrivateKServe
from mnist_kit.serving.kserve.supervision import cause, restart_delay

# --- the back-off


@pytest.mark.unit
def test_a_worker_comes_back_at_once_then_after_a_doubling_wait_and_not_after_the_limit():
    delays = [restart_delay(deaths) for deaths in range(C.KSERVE_RESTART_LIMIT + 1)]
    backoff = C.KSERVE_RESTART_BACKOFF_S
    assert delays == [0, 0, backoff, 2 * backoff, 4 * backoff, None]  # 0: it had lived past KSERVE_RESTART_STABLE_S


@pytest.mark.unit
def test_a_worker_s_end_is_told_by_its_signal_s_name_or_its_exit_code():
    assert cause(-signal.SIGKILL) == "was killed by SIGKILL"
    assert cause(1) == "exited with code 1"


# --- the supervisor over stand-in workers: a supervisor process (DRIVER) whose workers run WORKER or FAILING

DRIVER = """
import json, os, sys
from mnist_kit import constants as C
from mnist_kit.serving.kserve import supervision
C.KSERVE_RESTART_BACKOFF_S = 0.01  # the policy's own test is above: here, quick
C.KSERVE_SPARE_AFTER_S = 0.5
env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": sys.argv[3]}
spare = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
sys.exit(supervision.Supervisor(json.loads(sys.argv[1]), int(sys.argv[2]), env=env, spare=spare).run())
"""
# A worker that takes 1 s to set its handlers (as a real one loading), says it serves, and ends 0 when stopped.
WORKER = """
import os, signal, sys, time
time.sleep(1)
def stop(signum, frame):
    open(os.path.join(sys.argv[1], f"stopped-{os.getpid()}"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
open(os.path.join(sys.argv[1], f"serving-{os.getpid()}"), "w").close()
while True:
    time.sleep(1)
"""
FAILING = "import sys; sys.exit(3)"
# A spare: loads (1 s), says so, then serves as WORKER once it reads SERVE, and ends at once if it reads nothing.
SPARE = """
import os, sys, time
time.sleep(1)
open(os.path.join(sys.argv[1], f"waiting-{os.getpid()}"), "w").close()
if sys.stdin.readline() != "SERVE\\n":
    sys.exit(0)
""" + WORKER.replace("time.sleep(1)", "", 1)


def supervisor(tmp_path, worker: str, *args: str, count: int = 2, spare: str | None = None) -> subprocess.Popen:
    figures = tmp_path / "metrics"
    figures.mkdir()
    command = [json.dumps([sys.executable, "-c", worker, *args]), str(count), str(figures)]
    if spare:
        command.append(json.dumps([sys.executable, "-c", spare, *args]))
    with open(tmp_path / "supervisor.out", "w") as log:
        return subprocess.Popen([sys.executable, "-c", DRIVER, *command], stdout=log, stderr=subprocess.STDOUT)


def pids(tmp_path, kind: str) -> set[int]:
    """The stand-ins that have said `kind` (serving, waiting, stopped)."""
    return {int(path.name.removeprefix(f"{kind}-")) for path in tmp_path.glob(f"{kind}-*")}


def until(found, timeout: float, step: float = 0.05):
    """found()'s first true answer, asked every `step` seconds for up to `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := found():
            return answer
        time.sleep(step)
    raise AssertionError(f"nothing after {timeout} s")


@pytest.mark.integration
def test_a_worker_that_cannot_start_is_left_dead_after_the_limit_and_the_supervisor_ends_with_its_code(tmp_path):
    process = supervisor(tmp_path, FAILING, count=1)
    assert process.wait(timeout=30) == 3
    log = (tmp_path / "supervisor.out").read_text()
    assert log.count("exited with code 3 after") == C.KSERVE_RESTART_LIMIT
    assert log.count(": restarting it") == C.KSERVE_RESTART_LIMIT - 1
    assert f"dying {C.KSERVE_RESTART_LIMIT} times in a row within" in log and "not restarting it" in log


@pytest.mark.integration
def test_a_stop_signal_reaches_a_restarted_worker_still_starting_and_ends_the_restarts(tmp_path):
    """The new worker gets SIGTERM before its handler is set: blocked until then, it is handled, not fatal."""
    process = supervisor(tmp_path, WORKER, str(tmp_path))
    try:
        serving = until(lambda: len(found := set(tmp_path.glob("serving-*"))) == 2 and found, 10)
        first = {int(path.name.removeprefix("serving-")) for path in serving}
        os.kill(min(first), signal.SIGKILL)
        (new,) = until(lambda: {c.pid for c in psutil.Process(process.pid).children()} - first, 5)
        process.send_signal(signal.SIGTERM)  # within the new worker's first second, before its handler is set
        assert process.wait(timeout=10) == 0  # not -SIGTERM: the new worker ended through its handler, as the other
    finally:
        process.kill()
    assert pids(tmp_path, "stopped") == (first - {min(first)}) | {new}
    log = (tmp_path / "supervisor.out").read_text()
    assert f"(pid {min(first)}) was killed by SIGKILL after" in log and log.count("restarting it") == 1


@pytest.mark.integration
def test_the_spare_serves_in_a_dead_worker_s_place_at_once_and_a_new_spare_follows(tmp_path):
    process = supervisor(tmp_path, WORKER, str(tmp_path), spare=SPARE)
    try:
        until(lambda: len(pids(tmp_path, "serving")) == 2 and len(pids(tmp_path, "waiting")) == 1, 10)
        first, (spare,) = pids(tmp_path, "serving"), pids(tmp_path, "waiting")
        os.kill(min(first), signal.SIGKILL)
        killed_at = time.monotonic()
        until(lambda: spare in pids(tmp_path, "serving"), 5, step=0.01)
        took = time.monotonic() - killed_at
        (new_spare,) = until(lambda: pids(tmp_path, "waiting") - {spare}, 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert took < 0.5  # a poll of the supervisor's (0.1 s), not a worker's 1 s load
    assert pids(tmp_path, "stopped") == (first - {min(first)}) | {spare}  # the new spare ended too, not serving
    assert not psutil.pid_exists(new_spare) or psutil.Process(new_spare).status() == psutil.STATUS_ZOMBIE
    log = (tmp_path / "supervisor.out").read_text()
    assert f"the spare (pid {spare}) serves in its place" in log and log.count("restarting it") == 1


@pytest.mark.integration
def test_a_waiting_spare_ends_when_its_supervisor_is_gone(tmp_path):
    process = supervisor(tmp_path, WORKER, str(tmp_path), spare=SPARE)
    try:
        until(lambda: len(pids(tmp_path, "serving")) == 2 and len(pids(tmp_path, "waiting")) == 1, 10)
        process.kill()  # no stop signal handed on: the spare's pipe closes with its supervisor
        (spare,) = pids(tmp_path, "waiting")
        until(lambda: not psutil.pid_exists(spare) or psutil.Process(spare).status() == psutil.STATUS_ZOMBIE, 5)
    finally:
        for pid in pids(tmp_path, "serving"):  # the workers, orphaned
            os.kill(pid, signal.SIGKILL)


# --- a real runtime of two workers, one killed with SIGKILL under load


def worker_answering(url: str) -> int | None:
    """The pid of the worker that answers a fresh connection (the kernel spreads connections over the workers); None
    for one the kernel had queued at a worker as it was killed (reset)."""
    try:
        (described,) = json.loads(urllib.request.urlopen(f"{url}/models/mnist", timeout=30).read())
    except ConnectionResetError:
        return None
    return described["workers"][0]["pid"]


def readiness(url: str) -> int | str:
    try:
        return urllib.request.urlopen(f"{url}/v2/health/ready", timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def children(pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(pid).children()}


@pytest.fixture(scope="module")
def killed(model_store):
    """Two workers answering under load (8 clients, no retries) and a spare waiting; one worker killed with SIGKILL;
    what followed, until both answer again, 2 s more of load, and a new spare waits."""
    with PrivateKServe(model_store / "mnist.mar", workers=2) as runtime:
        url, supervisor_pid = runtime.inference_url, runtime.server.pid
        until(lambda: len(children(supervisor_pid)) == 3, 60)
        workers = set()
        until(lambda: workers.add(worker_answering(url)) or len(workers) == 2, 60)
        (spare,) = children(supervisor_pid) - workers
        load = Load(url, [path.read_bytes() for path in DIGITS], concurrency=8, retries=0).start()
        time.sleep(2)
        victim, folder = min(workers), next(runtime.workdir.glob("mnist-kit-runtime-*")) / "metrics"
        live_before = [p.name for p in folder.glob(f"gauge_live*_{victim}.db")]
        killed_at = load.now()
        os.kill(victim, signal.SIGKILL)
        ready, seen = [], set()
        probed = lambda: ready.append((load.now() - killed_at, readiness(url)))  # noqa: E731
        until(lambda: probed() or seen.add(worker_answering(url)) or spare in seen, 30, step=0.02)
        answered_s = load.now() - killed_at
        answering = set()
        until(lambda: answering.add(worker_answering(url)) or len(answering) == 2, 10, step=0)
        restarted_at = load.now()
        time.sleep(2)
        results = load.stop()
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
        waiting = until(lambda: children(supervisor_pid) - workers - {spare}, C.KSERVE_SPARE_AFTER_S + 30)
        record = SimpleNamespace(
            victim=victim,
            survivor=(workers - {victim}).pop(),
            spare=spare,
            new_spare=waiting,
            answering=answering,
            answered_s=answered_s,
            ready=ready,
            results=results,
            failed=[r for r in results if not r.ok],
            after=[r for r in results if r.sent >= restarted_at],
            before=[r for r in results if killed_at - 2 <= r.sent < killed_at],
            metrics=samples(metrics),
            live_before=live_before,
            live_after=[p.name for p in folder.glob(f"gauge_live*_{victim}.db")],
            log=runtime.log.read_text(errors="replace"),
        )
        print(
            f"\nkilled worker {victim} under load: the spare {spare} answered after {answered_s:.2f} s; "
            f"{len(record.failed)} of {len(results)} requests failed "
            f"(sent at {[round(r.sent - killed_at, 2) for r in record.failed]} s from the kill, taking "
            f"{[round(r.ms) for r in record.failed]} ms); {len(record.before)} sent in the 2 s before the kill, "
            f"{len(record.after)} in the 2 s after both answered again; "
            f"readiness probes in between: {[(round(t, 2), answer) for t, answer in ready]}"
        )
        yield record


def test_a_killed_worker_s_place_is_taken_by_the_spare_within_5_seconds_and_both_workers_answer(killed):
    assert killed.answered_s < 5
    assert killed.answering == {killed.survivor, killed.spare}


def test_a_new_spare_waits_after_the_spare_took_a_place(killed):
    (new_spare,) = killed.new_spare
    assert psutil.pid_exists(new_spare)


def test_the_log_says_which_worker_died_of_sigkill_and_that_it_restarts_it(killed):
    (line,) = [line for line in killed.log.splitlines() if f"(pid {killed.victim})" in line]
    assert " of 2 (pid " in line and "was killed by SIGKILL after" in line and line.endswith(": restarting it")
    assert f"the spare (pid {killed.spare}) serves in its place" in killed.log


def test_metrics_count_the_restart_and_still_add_up_the_dead_worker_s_requests(killed):
    assert killed.metrics[("mnist_kit_worker_restarts_total", (("reason", "signal"),))] == 1
    assert killed.metrics[("mnist_kit_worker_restarts_total", (("reason", "exit"),))] == 0
    answered = sum(
        value
        for (name, labels), value in killed.metrics.items()
        if name == "mnist_kit_requests_total" and ("status_class", "2xx") in labels
    )
    ok = len(killed.results) - len(killed.failed)
    assert abs(answered - ok) <= 8  # the load's 8 in flight at the kill: counted and lost, or answered uncounted
    assert killed.live_before and killed.live_after == []  # its live gauges (PreprocessingTime, ServingForm) went


def test_the_runtime_stays_ready_while_a_worker_restarts(killed):
    """Every probe is answered 200 by a live worker; one sent as the victim died may find its connection reset, as
    the requests in flight there are lost."""
    assert killed.ready and all(answer == 200 or t < 0.2 for t, answer in killed.ready)


def test_requests_after_the_restart_all_succeed(killed):
    assert killed.after and all(r.ok for r in killed.after)


def test_capacity_is_back_once_both_workers_answer(killed):
    assert len(killed.after) >= 0.75 * len(killed.before)  # the same 2 s of the same load, before the kill and after
