"""Soak: many mixed good and bad requests at high concurrency against a real TorchServe, optionally killing a worker.

Prints the count of 5xx (must be 0), of answers with the wrong status or digit, and the workers' memory growth.
Starts a private TorchServe on free ports from model_store/mnist.mar unless --url is given.

    python scripts/soak.py                       # 20 000 requests at concurrency 32
    python scripts/soak.py --kill-worker         # also kill -9 a worker halfway; counts failures while it restarts
"""

import argparse
import base64
import http.client
import io
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mnist_kit.serving.torchserve.launcher import PrivateServer  # noqa: E402


def requests_mix() -> list[tuple[str, bytes, str, int, int | None]]:
    """(name, body, content type, expected status, expected digit)."""
    mix = []
    for path in sorted((ROOT / "examples" / "digits").glob("*.png")):
        data, digit = path.read_bytes(), int(path.stem)
        mix.append(("png", data, "image/png", 200, digit))
        big = io.BytesIO()
        Image.open(path).resize((280, 280)).convert("L").point(lambda v: 255 - v).save(big, "JPEG")
        mix.append(("jpeg 280px dark on light", big.getvalue(), "image/jpeg", 200, digit))
        mix.append(
            (
                "json base64",
                json.dumps({"data": base64.b64encode(data).decode()}).encode(),
                "application/json",
                200,
                digit,
            )
        )
    blank = io.BytesIO()
    Image.new("L", (64, 64), 200).save(blank, "PNG")
    mix += [
        ("random bytes", os.urandom(2000), "image/png", 400, None),
        ("truncated png", mix[0][1][:60], "image/png", 400, None),
        ("blank", blank.getvalue(), "image/png", 400, None),
        ("text", b"seven", "text/plain", 415, None),
        ("bad json", b"{nope", "application/json", 400, None),
        ("bad base64", b'{"data": "!!"}', "application/json", 400, None),
        ("empty", b"", "image/png", 400, None),
    ]
    return mix


def worker_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def run(url: str, total: int, concurrency: int, kill=None) -> dict:
    mix = requests_mix()
    parsed = urlparse(url)
    counts, wrong, statuses, errors = Counter(), Counter(), Counter(), Counter()
    lock = threading.Lock()
    next_index = iter(range(total))
    killed_at = [None]
    failures_after_kill = Counter()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        for i in next_index:
            name, body, kind, expected, digit = rng.choice(mix)
            if kill and i == total // 2:
                killed_at[0] = time.monotonic()
                kill()
            try:
                connection.request("POST", "/predictions/mnist", body=body, headers={"Content-Type": kind})
                response = connection.getresponse()
                status, data = response.status, response.read()
            except (OSError, http.client.HTTPException) as e:
                connection.close()
                connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                with lock:
                    errors[type(e).__name__] += 1
                    if killed_at[0]:
                        failures_after_kill["connection error"] += 1
                continue
            with lock:
                statuses[status] += 1
                counts[name] += 1
                if status != expected or (digit is not None and json.loads(data).get("digit") != digit):
                    wrong[f"{name}: expected {expected}, got {status}"] += 1
                    if killed_at[0]:
                        failures_after_kill[status] += 1
        connection.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    return {
        "requests": total,
        "seconds": round(seconds, 1),
        "req_per_s": round(total / seconds),
        "statuses": dict(statuses),
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "wrong": dict(wrong),
        "connection_errors": dict(errors),
        "failures_after_kill": dict(failures_after_kill),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model-store", default=str(ROOT / "model_store"))
    parser.add_argument("--kill-worker", action="store_true", help="kill -9 one worker halfway through")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with PrivateServer(args.model_store) as ts:
        pids = ts.worker_pids()
        rss_before = worker_rss(pids)
        run(ts.inference_url, 500, args.concurrency)  # warm-up, so growth is not first-use allocation
        rss_warm = worker_rss(ts.worker_pids())

        def kill():
            os.kill(ts.worker_pids()[0], signal.SIGKILL)

        result = run(ts.inference_url, args.requests, args.concurrency, kill if args.kill_worker else None)
        time.sleep(1)
        after = ts.worker_pids()
        result["worker_rss_mb"] = {
            "start": round(rss_before / 2**20),
            "after_warm_up": round(rss_warm / 2**20),
            "end": round(worker_rss(after) / 2**20),
        }
        result["worker_pids"] = {"before": pids, "after": after}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['requests']} requests at concurrency {args.concurrency} in {result['seconds']} s "
        f"({result['req_per_s']} req/s)"
    )
    print(f"statuses: {result['statuses']}")
    print(f"5xx: {result['5xx']}")
    print(f"wrong status or digit: {sum(result['wrong'].values())} {result['wrong'] or ''}")
    print(f"connection errors: {result['connection_errors'] or 0}")
    if args.kill_worker:
        print(f"failed requests after the kill: {result['failures_after_kill'] or 0}")
    rss = result["worker_rss_mb"]
    print(
        f"worker RSS (all workers): {rss['start']} MB at start, {rss['after_warm_up']} MB after warm-up, "
        f"{rss['end']} MB at the end ({rss['end'] - rss['after_warm_up']:+d} MB)"
    )
    print(f"worker pids: {result['worker_pids']['before']} -> {result['worker_pids']['after']}")


if __name__ == "__main__":
    main()
