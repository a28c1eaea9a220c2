"""CPU time per request through the kserve runtime's batcher (serving/kserve/batcher.py), by stage, at two revisions:
the core's decode, infer and encode and the runtime's counting (metrics.Counted, the drift window) of the same
requests (`7.png`, batches of each size), in one process each, with $PROMETHEUS_MULTIPROC_DIR set as under several
workers. No HTTP and no second process on the cores: what a change to the serving path costs, without the drift of a
shared host's req/s (scripts/bench_revisions.py measures the whole runtime).

    python scripts/batcher_cost.py --base 9da9224 --archive model_store/mnist.mar --out docs/revisions/FILE.json

Each revision runs in a temporary git worktree (the head: this checkout) with this checkout's .venv; each figure is
the least of --repeats runs of --requests requests, in µs of process CPU time per request.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mnist_kit.files import write_json
from mnist_kit.machine import cpu

ROOT = Path(__file__).resolve().parent.parent
# Run inside each revision: the batcher of a loaded MnistModel, its stages timed by wrapping them.
MEASURE = """
import asyncio, json, os, sys, tempfile, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from mnist_kit.serving.kserve.model import MnistModel
archive, body_path, batch, requests, repeats, stages = sys.argv[1:7]
batch, requests, repeats, stages = int(batch), int(requests), int(repeats), stages == "stages"
model = MnistModel([archive], serving_form="onnx-int8")
model.load()
batcher = next(iter(model.versions.values())).batcher
spent = {}
def timed(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.process_time() - start
    setattr(owner, name, wrapper)
if stages:
    for name in ("decode", "infer", "encode"):
        timed(batcher.core, name, name)
    timed(batcher, "_count", "count")
    if getattr(batcher, "drift", None) is not None:
        timed(batcher.drift, "publish", "drift publish")
body = open(body_path, "rb").read()
async def send(rounds):
    for _ in range(rounds):
        sent = [batcher.submit({"body": body}, {"content-type": "image/png"}, body) for _ in range(batch)]
        await asyncio.gather(*sent)
loop = asyncio.new_event_loop()
loop.run_until_complete(send(300 // batch + 1))
best, best_stages = float("inf"), {}
rounds = max(1, requests // batch)
for _ in range(repeats):
    spent.clear()
    start = time.process_time()
    loop.run_until_complete(send(rounds))
    took = (time.process_time() - start) / (rounds * batch)
    if took < best:
        best, best_stages = took, {k: v / (rounds * batch) for k, v in spent.items()}
print(json.dumps({"total": round(best * 1e6, 2), "stages": {k: round(v * 1e6, 2) for k, v in best_stages.items()}}))
"""


def measure(checkout: Path, archive: Path, batch: int, *, requests: int, repeats: int, stages: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(archive), str(ROOT / "mnist_kit" / "samples" / "7.png"), str(batch)]
        + [str(requests), str(repeats), "stages" if stages else "total"],
        cwd=checkout,
        env={"PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{checkout}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="The revision to compare against (git rev).")
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--batch", default="1,16", help="Comma-separated batch sizes.")
    parser.add_argument("--requests", type=int, default=3000, help="Requests per run.")
    parser.add_argument("--repeats", type=int, default=7, help="Runs per figure; the least counts.")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()
    revs = {
        side: subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for side, rev in (("base", args.base), ("head", "HEAD"))
    }
    figures: dict = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory(prefix="mnist-kit-batcher-cost-") as tmp:
        worktree = Path(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", worktree, args.base], cwd=ROOT, check=True)
        try:
            for batch in (int(b) for b in args.batch.split(",")):
                for side, checkout in (("base", worktree), ("head", ROOT)):
                    kwargs = {"requests": args.requests, "repeats": args.repeats}
                    found = measure(checkout, args.archive.resolve(), batch, stages=False, **kwargs)
                    found["stages"] = measure(checkout, args.archive.resolve(), batch, stages=True, **kwargs)["stages"]
                    figures[side][str(batch)] = found
                base, head = figures["base"][str(batch)], figures["head"][str(batch)]
                ratio = head["total"] / base["total"]
                print(f"batch {batch}: base {base['total']} µs/request, head {head['total']} ({ratio:.3f})")
                for stage in sorted(base["stages"].keys() | head["stages"].keys()):
                    print(f"  {stage:>14}: {base['stages'].get(stage, 0):7.2f} → {head['stages'].get(stage, 0):7.2f}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT)
    result = {
        "machine": cpu(),
        "command": " ".join(["python", *sys.argv]),
        "base": revs["base"].strip(),
        "head": revs["head"].strip(),
        "settings": {"requests": args.requests, "repeats": args.repeats, "body": "7.png", "serving_form": "onnx-int8"},
        "us_cpu_per_request": figures,
    }
    if args.out:
        write_json(result, args.out)


if __name__ == "__main__":
    main()
