"""Benchmarks: serving throughput and latency against the stack's own ceiling, cold start, preprocessing cost.

The load generator is wrk (C, epoll; Debian's `wrk`), one thread, keep-alive connections; its own CPU use is
reported so a reader can see it is not the bottleneck. The ceiling is a no-op handler (noop_handler.py)
served with the same batching settings: the most any handler could get out of TorchServe on this machine.
The kit is also driven through the Open Inference Protocol (v2: the same PNG, base64 in a BYTES input), so the
protocol's cost shows beside the raw image's.
The tables of docs/PERFORMANCE.md are written from a run's JSON by bench_tables, so no figure is retyped.
"""

import base64
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.worker import preprocess as mnist_preprocess

# The sample 7, a canvas export and a phone photo of it (scripts/make_samples.py), shipped with the package.
SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE = SAMPLES / "7.png"
# A lone request's work is timed back to back and after the core idles this long: about the gap between two
# requests of one client at concurrency 1.
IDLE_GAP_S = 0.003


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sample_images() -> dict[str, bytes]:
    """The image types the README promises to handle fast."""
    photo = Image.open(SAMPLES / "photo.jpg")
    return {
        "28×28 PNG": SAMPLE.read_bytes(),
        "280×280 RGBA canvas PNG": (SAMPLES / "canvas.png").read_bytes(),
        "1000×750 JPEG": jpeg(photo.resize((1000, 750))),
        "4000×3000 JPEG": jpeg(photo.resize((4000, 3000))),
    }


def decode_only(data: bytes):
    """The image decoded as preprocessing decodes it (libpng for MNIST-format PNGs, else PIL), nothing more."""
    pixels = mnist_preprocess.mnist_png(data)
    return pixels if pixels is not None else mnist_preprocess.decode(data)


def timed(work, min_seconds: float, between=lambda: None, clock=time.perf_counter) -> list[float]:
    """Seconds per call of work(), for at least min_seconds and 20 calls, after one untimed call; between()
    runs untimed before each."""
    work()
    times = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(times) < 20:
        between()
        start = clock()
        work()
        times.append(clock() - start)
    return times


def preprocess_costs(min_seconds: float = 1.0) -> dict[str, dict]:
    """Median milliseconds per image of decode + preprocessing, and of the decode alone (the floor no
    preprocessing can go under), on one core (PIL and numpy are single-threaded)."""
    results = {}
    for name, data in sample_images().items():
        times = timed(lambda data=data: mnist_preprocess.read_image(data).pixels, min_seconds)
        decoding = timed(lambda data=data: decode_only(data), min_seconds / 2)
        results[name] = {
            "bytes": len(data),
            "ms_median": round(1000 * statistics.median(times), 3),
            "ms_p90": round(1000 * np.percentile(times, 90), 3),
            "decode_ms_median": round(1000 * statistics.median(decoding), 3),
            "runs": len(times),
        }
    return results


def lone_request_costs(archive: Path, form: str, body: Path = SAMPLE, min_seconds: float = 1.0) -> dict:
    """CPU milliseconds of a lone request's own work, in this process on one thread: decode `body`, normalise it,
    one forward pass of the archive's `form` (the one the server's workers chose). Back to back, and each call
    after the core idles for IDLE_GAP_S, as a worker does between lone requests. Where the second is several
    times the first, the work finds the core's caches and predictors cold (another tenant of a virtual machine's
    core, or the frontend and the other worker of this one, ran meanwhile): a cost a no-op handler hardly pays,
    and so a floor under the kit's p50 at concurrency 1 above the ceiling's. Empty for archives without forms."""
    import torch

    from mnist_kit.worker import forms
    from mnist_model import from_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
            weights = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["serializedFile"]
        if form not in forms.read_manifest(tmp):
            return {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each worker runs
        try:
            model = forms.load(tmp, from_state_dict(Path(tmp, weights)), "cpu")[form]
            data = body.read_bytes()

            def work():
                with torch.inference_mode():
                    model(mnist_preprocess.model_input([mnist_preprocess.read_image(data).pixels]))

            hot = timed(work, min_seconds, clock=time.thread_time)
            idle = timed(work, min_seconds, between=lambda: time.sleep(IDLE_GAP_S), clock=time.thread_time)
        finally:
            torch.set_num_threads(threads)
    return {
        "form": form,
        "idle_gap_ms": IDLE_GAP_S * 1000,
        "back_to_back_ms": round(1000 * statistics.median(hot), 3),
        "after_idle_ms": round(1000 * statistics.median(idle), 3),
    }


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


def wrk(url: str, body: Path, concurrency: int, seconds: float, content_type: str = "image/png") -> dict:
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


def model_config(archive: Path) -> dict:
    """The archive's model-config.yaml: its batching settings."""
    import yaml

    try:
        with zipfile.ZipFile(archive) as z:
            return yaml.safe_load(z.read("model-config.yaml"))
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise KitError(f"{archive} is not an archive of mnist-kit archive ({e})") from None


def noop_archive(export_path: Path, config: dict) -> Path:
    """noop.mar with the same model-config.yaml (batching settings) as the kit's archive."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp, "model-config.yaml")
        config_file.write_text(yaml.safe_dump(config))
        handler = Path(__file__).resolve().parent / "noop_handler.py"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "model_archiver.model_packaging",
                "--model-name",
                "noop",
                "--version",
                "1.0",
                "--handler",
                str(handler),
                "--config-file",
                str(config_file),
                "--export-path",
                str(export_path),
                "--force",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TMPDIR": tmp},
        )
    if result.returncode != 0:
        raise KitError(f"torch-model-archiver failed on the no-op handler: {(result.stderr or result.stdout).strip()}")
    return export_path / "noop.mar"


def v2_body(image: Path, folder: Path) -> Path:
    """The image as an Open Inference Protocol request body: one BYTES element, the file in base64."""
    encoded = base64.b64encode(image.read_bytes()).decode()
    path = Path(folder, "v2.json")
    path.write_text(json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}))
    return path


def started(stack: contextlib.ExitStack, archive: Path, model: str, body: Path):
    """A private TorchServe serving `archive`, kept open by `stack`; returns it with its cold start in seconds
    (`torchserve --start` to the first successful prediction)."""
    from mnist_kit import client as mnist_client
    from mnist_kit import server as mnist_server

    store = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    shutil.copy(archive, store / archive.name)
    start = time.perf_counter()
    ts = stack.enter_context(mnist_server.PrivateServer(store, load_models=archive.name))
    mnist_client.predict(body.read_bytes(), url=ts.inference_url, model=model, wait=30)
    return ts, round(time.perf_counter() - start, 2)


def run(
    archive=Path(C.MODEL_STORE, f"{C.MODEL_NAME}.mar"),
    concurrencies=(1, 8, 32, 64),
    seconds: float = 10,
    body: Path = SAMPLE,
    progress=lambda message: None,
) -> dict:
    """The whole benchmark on this machine: the kit and the ceiling with the same settings, both up at once and
    measured one after the other at each concurrency, so that both see the same machine."""
    require_wrk()
    config = model_config(Path(archive))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        noop = noop_archive(Path(tmp), config)
        models = {"kit": (Path(archive), "mnist"), "ceiling": (noop, "noop")}
        servers = {name: started(stack, path, model, body) for name, (path, model) in models.items()}
        # What each line sends where: the raw image to both servers, and the v2 body to the kit's.
        loads = {
            name: (f"{servers[name][0].inference_url}/predictions/{model}", body, "image/png")
            for name, (_, model) in models.items()
        }
        v2_url = f"{servers['kit'][0].inference_url}/v2/models/{models['kit'][1]}/infer"
        loads["kit_v2"] = (v2_url, v2_body(body, Path(tmp)), "application/json")
        for name, (url, payload, kind) in loads.items():
            # warm-up: the JVM's JIT compiles the hot paths (the v2 line runs on the warm kit server)
            wrk(url, payload, max(concurrencies), seconds if name != "kit_v2" else 1, kind)
        sweeps = {name: [] for name in loads}
        for c in concurrencies:
            for name, (url, payload, kind) in loads.items():
                sweeps[name].append(wrk(url, payload, c, seconds, kind))
                progress(
                    f"{name} c={c}: {sweeps[name][-1]['req_per_s']:.0f} req/s, p99 {sweeps[name][-1]['p99_ms']:.1f} ms"
                )
        workers = len(servers["kit"][0].worker_pids("mnist"))
        form, form_name = serving_form(servers["kit"][0])
        # After the whole sweep: the memory a pod serving this archive needs (mnist-kit export sizes pods by it).
        memory_mib = round(servers["kit"][0].memory_mib())
    for k, c, v2 in zip(sweeps["kit"], sweeps["ceiling"], sweeps["kit_v2"]):
        k["ratio_to_ceiling"] = round(k["req_per_s"] / c["req_per_s"], 3) if c["req_per_s"] else None
        v2["ratio_to_raw"] = round(v2["req_per_s"] / k["req_per_s"], 3) if k["req_per_s"] else None
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
        **{name: {"cold_start_s": servers[name][1], "sweep": sweeps[name]} for name in servers},
        "kit_v2": {"body": "v2 BYTES, one base64 PNG", "sweep": sweeps["kit_v2"]},
        "preprocess": preprocess_costs(),
        "lone_request": lone_request_costs(Path(archive), form_name, body),
    }
    result["kit"]["memory_mib"] = memory_mib
    return result


# The instruction sets that decide which kernels PyTorch runs, by their /proc/cpuinfo flag.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
}


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def machine() -> dict:
    """What the figures depend on: the CPU's model and instruction sets, its cores, and the software versions."""
    import torch
    import ts

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchserve": ts.__version__,
    }


def serving_form(ts, model: str = C.MODEL_NAME) -> tuple[str, str | None]:
    """The form the server's workers chose at start and why, and its name alone, from the handler's describe
    answer (GET /models/MODEL?customized=true); archives of other kits' handlers say nothing there."""
    from mnist_kit import client as mnist_client

    _, custom = mnist_client.described(ts.management_url, model, ts.management_token)
    if "serving_form" not in custom:
        return "not reported by the handler", None
    return f"{custom['serving_form']} ({custom['reason']})", custom["serving_form"]


def describe_machine(result: dict) -> str:
    """One line naming the CPU and software the figures were measured with."""
    m = result["machine"]
    isa = "instruction sets not recorded" if m.get("isa") is None else ", ".join(m["isa"]) or "no AVX2"
    return (
        f"{m['cpu']} ({isa}; PyTorch kernels {m.get('torch_cpu_capability', '?')}), {m['cpus']} CPU cores, "
        f"Python {m['python']}, torch {m.get('torch', '?')}, TorchServe {m.get('torchserve', '?')}; "
        f"serving form: {result.get('serving_form', '?')}"
    )


def plot(result: dict, path: Path) -> None:
    """Throughput and p99 against concurrency, kit vs ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = {"kit": "mnist-kit", "kit_v2": "mnist-kit, v2 protocol", "ceiling": "no-op handler (ceiling)"}
    for name, style in (("kit", "o-"), ("kit_v2", "^-"), ("ceiling", "s--")):
        if name not in result:
            continue
        sweep = result[name]["sweep"]
        xs = [p["concurrency"] for p in sweep]
        label = labels[name]
        left.plot(xs, [p["req_per_s"] for p in sweep], style, label=label)
        right.plot(xs, [p["p99_ms"] for p in sweep], style, label=label)
    for axis, title in ((left, "throughput (req/s)"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent connections")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(
        f"TorchServe on {result['machine']['cpus']} CPU cores, batch {result['settings']['batch_size']}, "
        f"max delay {result['settings']['max_batch_delay_ms']} ms"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(result: dict) -> str:
    """The figures as a table for people."""
    lines = [
        f"measured on {describe_machine(result)}",
        f"{'conc':>4} | {'mnist-kit req/s':>15} {'p50':>6} {'p90':>6} {'p99':>6} {'err':>4} | "
        f"{'ceiling req/s':>13} {'p50':>6} {'p99':>6} | {'ratio':>5}",
    ]
    for k, c in zip(result["kit"]["sweep"], result["ceiling"]["sweep"]):
        lines.append(
            f"{k['concurrency']:>4} | {k['req_per_s']:>15.0f} {k['p50_ms']:>6.2f} {k['p90_ms']:>6.2f} "
            f"{k['p99_ms']:>6.2f} {k['errors']:>4} | {c['req_per_s']:>13.0f} {c['p50_ms']:>6.2f} "
            f"{c['p99_ms']:>6.2f} | {k['ratio_to_ceiling']:>5.2f}"
        )
    lines.append("latencies in ms; ceiling: a no-op handler served with the same settings, in the same run")
    if "kit_v2" in result:
        lines.append("Open Inference Protocol v2, the same image as one base64 BYTES element, same server:")
        lines.append(f"{'conc':>4} | {'v2 req/s':>15} {'p50':>6} {'p90':>6} {'p99':>6} {'err':>4} | {'v2/raw':>6}")
        for v in result["kit_v2"]["sweep"]:
            lines.append(
                f"{v['concurrency']:>4} | {v['req_per_s']:>15.0f} {v['p50_ms']:>6.2f} {v['p90_ms']:>6.2f} "
                f"{v['p99_ms']:>6.2f} {v['errors']:>4} | {v['ratio_to_raw']:>6.2f}"
            )
    generator = max(
        p["generator_cpu"] for name in ("kit", "kit_v2", "ceiling") for p in result.get(name, {"sweep": []})["sweep"]
    )
    lines.append(f"load generator (wrk, 1 thread) used at most {generator:.2f} of a core")
    lines.append(
        f"cold start (torchserve --start to first prediction): {result['kit']['cold_start_s']:.2f} s "
        f"(no-op handler: {result['ceiling']['cold_start_s']:.2f} s)"
    )
    if "memory_mib" in result["kit"]:
        memory = result["kit"]["memory_mib"]
        lines.append(f"server memory after the sweep (frontend and workers, shared pages once): {memory} MiB")
    lines.append(
        "preprocessing per image, one core (decoding alone): "
        + ", ".join(
            f"{name} {r['ms_median']:.3f} ms ({r['decode_ms_median']:.3f})" for name, r in result["preprocess"].items()
        )
    )
    if result.get("lone_request"):
        lines.append(lone_request_line(result["lone_request"]))
    return "\n".join(lines)


def lone_request_line(lone: dict) -> str:
    return (
        f"a lone request's own work in process ({lone['form']}: decode, normalise, forward one image), CPU ms: "
        f"{lone['back_to_back_ms']:.3f} back to back, {lone['after_idle_ms']:.3f} after {lone['idle_gap_ms']:.0f} ms "
        "idle"
    )


def print_preprocess_costs() -> None:
    print(f"{'image':<26}{'bytes':>9}{'ms median':>11}{'ms p90':>9}{'decoding':>10}")
    for name, r in preprocess_costs().items():
        print(f"{name:<26}{r['bytes']:>9}{r['ms_median']:>11.3f}{r['ms_p90']:>9.3f}{r['decode_ms_median']:>10.3f}")


if __name__ == "__main__":
    print_preprocess_costs()
