"""Benchmarks: serving throughput and latency against the stack's own ceiling, cold start, preprocessing cost.

The load generator is wrk (C, epoll; Debian's `wrk`), one thread, keep-alive connections; its own CPU use is
reported so a reader can see it is not the bottleneck. The ceiling is a no-op handler (noop_handler.py)
served with the same batching settings: the most any handler could get out of TorchServe on this machine.
The kit is also driven through the Open Inference Protocol (v2: the same PNG, base64 in a BYTES input), so the
protocol's cost shows beside the raw image's. With a shadow, the kserve runtime is served again with a second
version shadowing the default, at each share of SHADOW_SHARES: what the shadow costs the default's answers.
The tables of docs/PERFORMANCE.md are written from a run's JSON by bench/tables.py, so no figure is retyped.
"""

import base64
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.bench.costs import SAMPLE, lone_request_costs, preprocess_costs
from mnist_kit.bench.report import machine
from mnist_kit.errors import KitError
from mnist_kit.packaging import mar

# The shadow's cost is measured with the same model under this version, at these shares of requests.
SHADOW_VERSION = "shadow"
SHADOW_SHARES = (1.0, 0.1)
WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise KitError("wrk is not installed: scripts/setup.sh installs it (Debian: apt-get install wrk)")


def wrk(url: str, body: Path, concurrency: int, *, seconds: float, content_type: str = "image/png") -> dict:
    """One wrk run; returns req/s, latency percentiles in ms, errors and the generator's CPU use."""
    require_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type},
        )
    finally:
        os.unlink(script.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
    if line is None:
        raise KitError(f"wrk failed: {(out.stderr or out.stdout).strip() or f'exit code {out.returncode}'}")
    r = json.loads(line)
    seconds_run = r["duration_us"] / 1e6
    return {
        "concurrency": concurrency,
        "requests": r["requests"],
        "req_per_s": round(r["requests"] / seconds_run, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"],
        "generator_cpu": round((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / seconds_run, 2),
    }


def noop_archive(export_path: Path, config: dict) -> Path:
    """noop.mar with the same model-config.yaml (batching settings) as the kit's archive."""
    handler = Path(__file__).resolve().parent / "noop_handler.py"
    return mar.package(model_name="noop", version="1.0", handler=handler, export_path=export_path, config=config)


def shadow_archive(archive: Path, folder: Path, version: str = SHADOW_VERSION) -> Path:
    """`archive` re-packed as it is under another version, in `folder`: the same weights, forms and code, so a shadow
    of it disagrees with the default on next to nothing and what is measured is the shadow's own cost."""
    original = mar.read(archive)
    files = original.extract(Path(folder, "files"))
    named = Path(folder, "named")  # what the archiver is handed by name, out of the folder it copies whole
    named.mkdir()
    by_name = {
        key: original.model[key] for key in ("handler", "serializedFile", "modelFile") if original.model.get(key)
    }
    for name in ("MAR-INF", mar.MODEL_CONFIG, *by_name.values()):
        if Path(files, name).exists():
            shutil.move(Path(files, name), Path(named, name))
    return mar.package(
        model_name=original.model_name,
        version=version,
        handler=named / by_name["handler"],
        export_path=folder,
        serialized_file=named / by_name["serializedFile"] if "serializedFile" in by_name else None,
        model_file=named / by_name["modelFile"] if "modelFile" in by_name else None,
        extra_files=[files],
        config=original.read(mar.MODEL_CONFIG).decode() if Path(named, mar.MODEL_CONFIG).exists() else None,
    )


def v2_body(image: Path, folder: Path) -> Path:
    """The image as an Open Inference Protocol request body: one BYTES element, the file in base64."""
    encoded = base64.b64encode(image.read_bytes()).decode()
    path = Path(folder, "v2.json")
    path.write_text(json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}))
    return path


def started(stack: contextlib.ExitStack, archive: Path, model: str, *, body: Path):
    """A private TorchServe serving `archive`, kept open by `stack`; returns it with its cold start in seconds
    (`torchserve --start` to the first successful prediction)."""
    from mnist_kit.serving import client
    from mnist_kit.serving.torchserve import launcher as torchserve_launcher

    store = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    shutil.copy(archive, store / archive.name)
    start = time.perf_counter()
    ts = stack.enter_context(torchserve_launcher.PrivateServer(store, load_models=archive.name))
    client.predict(body.read_bytes(), url=ts.inference_url, model=model, wait=30)
    return ts, round(time.perf_counter() - start, 2)


def started_kserve(stack: contextlib.ExitStack, archive, *, workers: int, body: Path, **options):
    """The kserve runtime serving `archive` (one, or one model's versions) on free ports, kept open by `stack`; with
    its cold start in seconds (the command to the first successful prediction). `options`: PrivateKServe's (a
    shadow, a serving form)."""
    from mnist_kit.serving import client
    from mnist_kit.serving.kserve.launcher import PrivateKServe

    start = time.perf_counter()
    ks = stack.enter_context(PrivateKServe(archive, workers=workers, **options))
    client.predict(body.read_bytes(), url=ks.inference_url, wait=30)
    return ks, round(time.perf_counter() - start, 2)


def started_raw_asgi(stack: contextlib.ExitStack, *, workers: int, body: Path):
    """The Python HTTP ceiling (raw_asgi.py) on uvicorn with `workers` workers on a free port, kept open by `stack`;
    with its start in seconds."""
    from mnist_kit.serving import client
    from mnist_kit.serving.processes import free_port

    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "mnist_kit.bench.raw_asgi:app", "--host", C.HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--http", "httptools", "--loop", "uvloop", "--no-access-log"]
    start = time.perf_counter()
    server = subprocess.Popen([*argv, "--log-level", "warning"])
    stack.callback(stop, server)
    url = f"http://{C.HOST}:{port}"
    client.predict(body.read_bytes(), url=url, wait=30)
    return url, round(time.perf_counter() - start, 2)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run(
    archive=Path(C.MODEL_STORE, f"{C.MODEL_NAME}.mar"),
    concurrencies=(1, 8, 32, 64),
    seconds: float = 10,
    *,
    body: Path = SAMPLE,
    kserve: bool = False,
    shadow: bool = False,
    progress=lambda message: None,
) -> dict:
    """The whole benchmark on this machine: the kit and the ceiling with the same settings, both up at once and
    measured one after the other at each concurrency, so that both see the same machine; with `kserve`, the same
    archive on the kserve runtime too (as many workers as TorchServe's), and the Python HTTP ceiling it is measured
    against (a bare ASGI app on uvicorn, as many workers), in the same rounds; with `shadow` (and `kserve`), that
    runtime again for each share of SHADOW_SHARES with a shadow version, the plain one its baseline."""
    require_wrk()
    if shadow and not kserve:
        raise KitError("the shadow's cost is measured on the kserve runtime: measure it too")
    config = mar.read(archive).config
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        noop = noop_archive(Path(tmp), config)
        models = {"kit": (Path(archive), "mnist"), "ceiling": (noop, "noop")}
        servers = {name: started(stack, path, model, body=body) for name, (path, model) in models.items()}
        if kserve:
            workers = len(servers["kit"][0].worker_pids("mnist"))
            servers["kserve"] = started_kserve(stack, Path(archive), workers=workers, body=body)
            if shadow:
                baseline_form = serving_form(servers["kserve"][0], url=servers["kserve"][0].inference_url)[1]
                servers.update(
                    started_shadows(stack, Path(archive), Path(tmp), workers=workers, body=body, form=baseline_form)
                )
            raw_url, raw_start = started_raw_asgi(stack, workers=workers, body=body)
        # What each line sends where: the raw image to both servers, and the v2 body to the kit's.
        loads = {
            name: (f"{servers[name][0].inference_url}/predictions/{model}", body, "image/png")
            for name, (_, model) in models.items()
        }
        v2_url = f"{servers['kit'][0].inference_url}/v2/models/{models['kit'][1]}/infer"
        loads["kit_v2"] = (v2_url, v2_body(body, Path(tmp)), "application/json")
        if kserve:
            for name in ["kserve", *(shadow_name(share) for share in SHADOW_SHARES if shadow)]:
                loads[name] = (f"{servers[name][0].inference_url}/predictions/mnist", body, "image/png")
            loads["raw_asgi"] = (f"{raw_url}/predictions/mnist", body, "image/png")
        for name, (url, payload, kind) in loads.items():
            # warm-up: the JVM's JIT compiles the hot paths (the v2 line runs on the warm kit server)
            wrk(url, payload, max(concurrencies), seconds=seconds if name != "kit_v2" else 1, content_type=kind)
        sweeps = {name: [] for name in loads}
        for c in concurrencies:
            for name, (url, payload, kind) in loads.items():
                sweeps[name].append(wrk(url, payload, c, seconds=seconds, content_type=kind))
                progress(
                    f"{name} c={c}: {sweeps[name][-1]['req_per_s']:.0f} req/s, p99 {sweeps[name][-1]['p99_ms']:.1f} ms"
                )
        workers = len(servers["kit"][0].worker_pids("mnist"))
        form, form_name = serving_form(servers["kit"][0])
        # After the whole sweep: the memory a pod serving this archive needs (mnist-kit export sizes pods by it).
        memory_mib = round(servers["kit"][0].memory_mib())
        if kserve:
            ks = servers["kserve"][0]
            kserve_memory = {"memory_mib": round(ks.memory_mib()), "worker_rss_mib": ks.worker_rss_mib()}
            kserve_memory["serving_form"] = serving_form(ks, url=ks.inference_url)[1]
        if shadow:
            shadowed = shadow_result(servers, sweeps)
    for k, c, v2 in zip(sweeps["kit"], sweeps["ceiling"], sweeps["kit_v2"]):
        k["ratio_to_ceiling"] = round(k["req_per_s"] / c["req_per_s"], 3) if c["req_per_s"] else None
        v2["ratio_to_raw"] = round(v2["req_per_s"] / k["req_per_s"], 3) if k["req_per_s"] else None
    for k, c, ks, raw in zip(sweeps["kit"], sweeps["ceiling"], sweeps.get("kserve", []), sweeps.get("raw_asgi", [])):
        ks["ratio_to_kit"] = round(ks["req_per_s"] / k["req_per_s"], 3) if k["req_per_s"] else None
        ks["ratio_to_ceiling"] = round(ks["req_per_s"] / c["req_per_s"], 3) if c["req_per_s"] else None
        ks["ratio_to_raw_asgi"] = round(ks["req_per_s"] / raw["req_per_s"], 3) if raw["req_per_s"] else None
        ks["p50_to_raw_asgi"] = round(ks["p50_ms"] / raw["p50_ms"], 2) if raw["p50_ms"] else None
    result = {
        "machine": machine(),
        "serving_form": form,
        "settings": {
            "batch_size": config["batchSize"],
            "max_batch_delay_ms": config["maxBatchDelay"],
            "workers": workers,
            "seconds_per_point": seconds,
            "body": body.name,
        },
        **{name: {"cold_start_s": servers[name][1], "sweep": sweeps[name]} for name in ("kit", "ceiling")},
        "kit_v2": {"body": "v2 BYTES, one base64 PNG", "sweep": sweeps["kit_v2"]},
        **({"kserve": {"cold_start_s": servers["kserve"][1], "sweep": sweeps["kserve"]}} if kserve else {}),
        **({"raw_asgi": {"cold_start_s": raw_start, "sweep": sweeps["raw_asgi"]}} if kserve else {}),
        "preprocess": preprocess_costs(),
        "lone_request": lone_request_costs(Path(archive), form_name, body),
    }
    result["kit"]["memory_mib"] = memory_mib
    if kserve:
        result["kserve"].update(kserve_memory)
    if shadow:
        result["kserve_shadow"] = shadowed
    return result


def shadow_name(share: float) -> str:
    return f"kserve_shadow_{share}"


def started_shadows(stack: contextlib.ExitStack, archive: Path, folder: Path, *, workers: int, body: Path, form):
    """For each share of SHADOW_SHARES, the kserve runtime serving `archive` with its shadow_archive shadowing it
    (the disagreements in the server's own folder), as many workers and the serving form `form`, the baseline's;
    by shadow_name, as `started` returns each."""
    from mnist_kit.serving.kserve.launcher import Shadowing

    versions = [archive, shadow_archive(archive, Path(folder, "shadow"))]
    return {
        shadow_name(share): started_kserve(
            stack, versions, workers=workers, body=body, serving_form=form, shadow=Shadowing(SHADOW_VERSION, share)
        )
        for share in SHADOW_SHARES
    }


def shadow_result(servers: dict, sweeps: dict) -> dict:
    """What the shadow cost the default's answers, per share, against the plain kserve runtime of the same rounds;
    read while the servers still run (their shadow's counts, the shadow version's serving form)."""
    ks = servers[shadow_name(SHADOW_SHARES[0])][0]
    configurations = []
    for share in SHADOW_SHARES:
        server, cold_start = servers[shadow_name(share)]
        figures = {"share": share, "cold_start_s": cold_start, "sweep": sweeps[shadow_name(share)]}
        configurations.append(
            {**figures, **shadow_counts(server.inference_url), "memory_mib": round(server.memory_mib())}
        )
        configurations[-1].update(costs(sweeps["kserve"], figures["sweep"]))
    form = serving_form(ks, f"{C.MODEL_NAME}/{SHADOW_VERSION}", url=ks.inference_url)[1]
    return {"version": SHADOW_VERSION, "serving_form": form, "baseline": "kserve", "configurations": configurations}


def costs(baseline: list[dict], sweep: list[dict]) -> dict:
    """Each point's throughput as a share of the baseline's at the same concurrency and its p50 over the baseline's,
    in ms (written into `sweep`); returns those at c=32 and c=1 (None where not measured)."""
    for base, point in zip(baseline, sweep):
        point["ratio_to_baseline"] = round(point["req_per_s"] / base["req_per_s"], 3) if base["req_per_s"] else None
        point["p50_over_baseline_ms"] = round(point["p50_ms"] - base["p50_ms"], 3)
    at = {point["concurrency"]: point for point in sweep}
    return {
        "c32_req_per_s_ratio": at[32]["ratio_to_baseline"] if 32 in at else None,
        "c1_p50_difference_ms": at[1]["p50_over_baseline_ms"] if 1 in at else None,
    }


def shadow_counts(url: str) -> dict:
    """The pictures the shadow read and those it disagreed on, summed over the runtime's workers (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    from mnist_kit.serving import client

    counts = {"comparisons": 0, "disagreements": 0}
    for family in text_string_to_metric_families(client.request(f"{url}/metrics").decode()):
        for sample in family.samples:
            for key in counts:
                counts[key] += int(sample.value) if sample.name == f"mnist_kit_shadow_{key}_total" else 0
    return counts


def serving_form(server, model: str = C.MODEL_NAME, *, url: str | None = None) -> tuple[str, str | None]:
    """The form the server's workers chose at start and why, and its name alone, from the handler's describe
    answer (GET /models/MODEL?customized=true, on `url`, else TorchServe's management API); archives of other kits'
    handlers say nothing there."""
    from mnist_kit.serving import client

    _, custom = client.described(url or server.management_url, model, None if url else server.management_token)
    if "serving_form" not in custom:
        return "not reported by the handler", None
    return f"{custom['serving_form']} ({custom['reason']})", custom["serving_form"]
