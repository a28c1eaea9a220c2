"""Where the kserve runtime's CPU goes under load: one worker of a 2-worker runtime sampled by py-spy while wrk sends
`7.png` at concurrency 32 (PUT /predictions/mnist), summed by frame. Writes the top frames, by own time and with what
they call, as JSON (docs/profiles/*.json, which docs/PERFORMANCE.md cites); `--raw` keeps py-spy's collapsed stacks.

    python scripts/profile_kserve.py --archive model_store/mnist.mar --out docs/profiles/CPU.json

Needs py-spy (in the dev extra) and wrk, and the right to trace a process (root, or ptrace_scope 0).
"""

import argparse
import contextlib
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.bench.run import started_kserve, wrk
from mnist_kit.files import write_json
from mnist_kit.machine import cpu

BODY = Path(__file__).resolve().parent.parent / "mnist_kit" / "samples" / "7.png"


def summarise(collapsed: Path, top: int = 50) -> dict:
    """Per frame, the share of the busy samples spent in it (own) and under it (inclusive)."""
    own, under, total = Counter(), Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames, count = stack.split(";"), int(count)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            under[frame] += count

    def shares(counter):
        return [{"frame": f, "percent": round(100 * n / total, 1)} for f, n in counter.most_common(top)]

    return {"samples": total, "own": shares(own), "inclusive": shares(under)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path(C.MODEL_STORE, f"{C.MODEL_NAME}.mar"))
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--raw", type=Path, default=None, help="Also keep py-spy's collapsed stacks here.")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        ks, _ = started_kserve(stack, args.archive, workers=2, body=BODY)
        children = subprocess.run(["pgrep", "-P", str(ks.server.pid)], capture_output=True, text=True, check=True)
        worker = int(children.stdout.split()[0])
        url = f"{ks.inference_url}/predictions/{C.MODEL_NAME}"
        result = {}
        load = threading.Thread(target=lambda: result.update(wrk(url, BODY, 32, seconds=args.seconds + 3)))
        load.start()
        time.sleep(1.5)  # sampled once the load is steady
        collapsed = Path(args.raw or Path(tmp, "collapsed.txt"))
        py_spy = ["py-spy", "record", "-d", str(args.seconds), "-r", "200", "-f", "raw", "-o", str(collapsed)]
        subprocess.run([*py_spy, "-p", str(worker), "--nonblocking"], check=True, capture_output=True)
        load.join()
        report = {
            "command": "python scripts/profile_kserve.py",
            "machine": cpu(),
            "load": {"concurrency": 32, "body": "7.png", "req_per_s": result.get("req_per_s")},
            **summarise(collapsed),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    print(f"{report['load']['req_per_s']} req/s while sampled; wrote {args.out}")
    for row in report["own"][:12]:
        print(f"{row['percent']:5.1f} %  {row['frame']}")


if __name__ == "__main__":
    main()
