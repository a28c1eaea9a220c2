"""The kserve runtime of two revisions of the kit, side by side in one run: the same archive served by both at once
(each its own ports, as many workers), driven in turn by wrk at each concurrency, round after round, the order of
the two swapped every round, so a shared host's drift falls on both alike. Prints each side's median req/s,
p50/p99 and CPU time per request (all its processes' user and system time over the run, per request answered: what
a change costs, less moved by a neighbour's load than req/s) and the ratios, and writes them as JSON with the
machine.

    python scripts/bench_revisions.py --base HEAD~3 --archive model_store/mnist.mar --out reports/revisions.json

The base revision is checked out in a temporary git worktree and run from there (PYTHONPATH) with this checkout's
.venv; the head is the working tree as it is. Needs wrk.
"""

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from mnist_kit import constants as C
from mnist_kit.bench.run import wrk
from mnist_kit.files import write_json
from mnist_kit.machine import cpu

ROOT = Path(__file__).resolve().parent.parent
BODY = ROOT / "mnist_kit" / "samples" / "7.png"
# Where the kserve runtime's process lives in a checkout: its module since the serving wings, and before them.
SERVER_MODULES = {"mnist_kit/serving/kserve/server.py": "mnist_kit.serving.kserve.server"}
OLD_SERVER_MODULE = "mnist_kit.serving.kserve_server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((C.HOST, 0))
        return s.getsockname()[1]


def server_module(checkout: Path) -> str:
    return next((m for path, m in SERVER_MODULES.items() if (checkout / path).is_file()), OLD_SERVER_MODULE)


@contextlib.contextmanager
def serving(checkout: Path, archive: Path, *, workers: int, log: Path):
    """The kserve runtime of `checkout` serving `archive`; yields its URL and process once it is ready."""
    http_port = free_port()
    argv = [sys.executable, "-m", server_module(checkout), "--archive", str(archive), "--host", C.HOST]
    argv += ["--http-port", str(http_port), "--grpc-port", str(free_port()), "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    with open(log, "w") as out:
        server = subprocess.Popen(argv, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{C.HOST}:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the kserve runtime of {checkout} did not start: see {log}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2)
                break
            time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=C.KSERVE_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            server.kill()


def cpu_seconds(pid: int) -> float:
    """User and system time of a process and all its descendants so far."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(t.user + t.system for t in (p.cpu_times() for p in tree))


def timed(url: str, pid: int, concurrency: int, seconds: float) -> dict:
    """One wrk run, with the server's CPU time per request answered in it (µs)."""
    before = cpu_seconds(pid)
    run = wrk(url, BODY, concurrency, seconds=seconds)
    return run | {"cpu_us_per_request": round(1e6 * (cpu_seconds(pid) - before) / max(run["requests"], 1), 1)}


def summary(runs: list[dict]) -> dict:
    return {
        "req_per_s": statistics.median(r["req_per_s"] for r in runs),
        "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="The revision to compare against (git rev).")
    parser.add_argument("--archive", type=Path, default=ROOT / C.MODEL_STORE / f"{C.MODEL_NAME}.mar")
    parser.add_argument("--concurrency", default="1,32", help="Comma-separated connection counts.")
    parser.add_argument("--seconds", type=float, default=5, help="Load time per run.")
    parser.add_argument("--rounds", type=int, default=5, help="Runs per side and concurrency, interleaved.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    base_rev = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True, check=True)
    head_rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="mnist-kit-revisions-") as tmp, contextlib.ExitStack() as stack:
        worktree = Path(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", worktree, args.base], cwd=ROOT, check=True)
        stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", worktree], cwd=ROOT)
        servers = {
            side: stack.enter_context(
                serving(checkout, args.archive, workers=args.workers, log=Path(tmp, f"{side}.log"))
            )
            for side, checkout in (("base", worktree), ("head", ROOT))
        }
        runs = {side: {c: [] for c in concurrencies} for side in servers}
        for url, _ in servers.values():  # warm-up, not counted
            wrk(f"{url}/predictions/{C.MODEL_NAME}", BODY, max(concurrencies), seconds=args.seconds)
        for round_ in range(args.rounds):
            for side in ("base", "head") if round_ % 2 == 0 else ("head", "base"):
                url, server = servers[side]
                for c in concurrencies:
                    runs[side][c].append(timed(f"{url}/predictions/{C.MODEL_NAME}", server.pid, c, args.seconds))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    result = {
        "machine": cpu(),
        "base": base_rev.stdout.strip(),
        "head": head_rev.stdout.strip() + (" + working tree" if dirty() else ""),
        "settings": {"seconds": args.seconds, "rounds": args.rounds, "workers": args.workers, "body": BODY.name},
        "sides": {side: {str(c): summary(r) for c, r in by_c.items()} for side, by_c in runs.items()},
    }
    print(f"{result['machine']['cpu']} ({', '.join(result['machine']['isa'])}), {args.workers} workers each")
    print(
        f"{'c':>4} {'base req/s':>11} {'head req/s':>11} {'ratio':>6} {'base p50':>9} {'head p50':>9} (ms) "
        f"{'base CPU':>9} {'head CPU':>9} (µs/request) {'ratio':>6}"
    )
    for c in concurrencies:
        base, head = result["sides"]["base"][str(c)], result["sides"]["head"][str(c)]
        ratio = head["req_per_s"] / base["req_per_s"]
        cpu_ratio = head["cpu_us_per_request"] / base["cpu_us_per_request"]
        print(
            f"{c:>4} {base['req_per_s']:>11.0f} {head['req_per_s']:>11.0f} {ratio:>6.3f} "
            f"{base['p50_ms']:>9.3f} {head['p50_ms']:>9.3f}      {base['cpu_us_per_request']:>9.1f} "
            f"{head['cpu_us_per_request']:>9.1f}              {cpu_ratio:>6.3f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(result, args.out)


def dirty() -> bool:
    status = subprocess.run(["git", "status", "--porcelain", "mnist_kit"], cwd=ROOT, capture_output=True, text=True)
    return bool(status.stdout.strip())


if __name__ == "__main__":
    main()
