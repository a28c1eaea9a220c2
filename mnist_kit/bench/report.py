"""A bench result for people: the machine it was measured on, a table, a plot, and the files `mnist-kit bench`
writes (OUT.json, OUT.png)."""

import json
import platform
from pathlib import Path

from mnist_kit.bench.costs import preprocess_costs
from mnist_kit.machine import cpu


def machine() -> dict:
    """What the figures depend on: the CPU's model and instruction sets, its cores, and the software versions."""
    import onnxruntime
    import torch
    import ts

    return {
        **cpu(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torchserve": ts.__version__,
    }


def describe_machine(result: dict) -> str:
    """One line naming the CPU and software the figures were measured with."""
    m = result["machine"]
    isa = "instruction sets not recorded" if m.get("isa") is None else ", ".join(m["isa"]) or "no AVX2"
    return (
        f"{m['cpu']} ({isa}; PyTorch kernels {m.get('torch_cpu_capability', '?')}), {m['cpus']} CPU cores, "
        f"Python {m['python']}, torch {m.get('torch', '?')}"
        + (f", ONNX Runtime {m['onnxruntime']}" if m.get("onnxruntime") else "")
        + f", TorchServe {m.get('torchserve', '?')}; "
        f"serving form: {result.get('serving_form', '?')}"
    )


def plot(result: dict, path: Path) -> None:
    """Throughput and p99 against concurrency, kit vs ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = {
        "kit": "mnist-kit on TorchServe",
        "kit_v2": "mnist-kit on TorchServe, v2 protocol",
        "ceiling": "TorchServe's no-op handler (ceiling)",
        "kserve": "mnist-kit on KServe's ModelServer",
        "raw_asgi": "a bare ASGI app on uvicorn (Python HTTP ceiling)",
    }
    curves = []
    for name, style in (("kit", "o-"), ("kit_v2", "^-"), ("ceiling", "s--"), ("kserve", "d-"), ("raw_asgi", "x:")):
        if name in result:
            curves.append((result[name]["sweep"], style, labels[name]))
    for shadowed in result.get("kserve_shadow", {}).get("configurations", []):
        curves.append((shadowed["sweep"], "d--", f"the kserve runtime, a shadow at share {shadowed['share']:g}"))
    for sweep, style, label in curves:
        xs = [p["concurrency"] for p in sweep]
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
    lines += runtime_rows(result)
    sweeps = [result.get(name, {"sweep": []})["sweep"] for name in ("kit", "kit_v2", "ceiling", "kserve", "raw_asgi")]
    sweeps += [shadowed["sweep"] for shadowed in result.get("kserve_shadow", {}).get("configurations", [])]
    generator = max(p["generator_cpu"] for sweep in sweeps for p in sweep)
    lines.append(f"load generator (wrk, 1 thread) used at most {generator:.2f} of a core")
    lines.append(
        f"cold start (torchserve --start to first prediction): {result['kit']['cold_start_s']:.2f} s "
        f"(no-op handler: {result['ceiling']['cold_start_s']:.2f} s)"
        + (
            f"; kserve runtime (command to first prediction): {result['kserve']['cold_start_s']:.2f} s"
            if "kserve" in result
            else ""
        )
    )
    if "memory_mib" in result["kit"]:
        memory = result["kit"]["memory_mib"]
        lines.append(f"server memory after the sweep (frontend and workers, shared pages once): {memory} MiB")
    if "worker_rss_mib" in result.get("kserve", {}):
        ks = result["kserve"]
        lines.append(
            f"kserve runtime: serving form {ks['serving_form']}, each worker {max(ks['worker_rss_mib']):.0f} MiB "
            f"resident at most, the whole server {ks['memory_mib']} MiB"
        )
    lines.append(
        "preprocessing per image, one core (decoding alone): "
        + ", ".join(
            f"{name} {r['ms_median']:.3f} ms ({r['decode_ms_median']:.3f})" for name, r in result["preprocess"].items()
        )
    )
    if result.get("lone_request"):
        lines.append(lone_request_line(result["lone_request"]))
    return "\n".join(lines)


def runtime_rows(result: dict) -> list[str]:
    """The rows beside the TorchServe sweep, where the run measured them: the v2 protocol, the kserve runtime, and a
    bare ASGI app."""
    lines = []
    if "kit_v2" in result:
        lines.append("Open Inference Protocol v2, the same image as one base64 BYTES element, same server:")
        lines.append(f"{'conc':>4} | {'v2 req/s':>15} {'p50':>6} {'p90':>6} {'p99':>6} {'err':>4} | {'v2/raw':>6}")
        for v in result["kit_v2"]["sweep"]:
            lines.append(
                f"{v['concurrency']:>4} | {v['req_per_s']:>15.0f} {v['p50_ms']:>6.2f} {v['p90_ms']:>6.2f} "
                f"{v['p99_ms']:>6.2f} {v['errors']:>4} | {v['ratio_to_raw']:>6.2f}"
            )
    if "kserve" in result:
        lines.append("The same image on the kserve runtime (KServe's ModelServer), same archive, same rounds:")
        lines.append(
            f"{'conc':>4} | {'kserve req/s':>15} {'p50':>6} {'p90':>6} {'p99':>6} {'err':>4} | {'/kit':>5} {'/ceil':>5}"
        )
        for v in result["kserve"]["sweep"]:
            lines.append(
                f"{v['concurrency']:>4} | {v['req_per_s']:>15.0f} {v['p50_ms']:>6.2f} {v['p90_ms']:>6.2f} "
                f"{v['p99_ms']:>6.2f} {v['errors']:>4} | {v['ratio_to_kit']:>5.2f} {v['ratio_to_ceiling']:>5.2f}"
            )
    if "raw_asgi" in result:
        lines.append("The Python HTTP ceiling (a bare ASGI app on uvicorn, as many workers), same rounds:")
        lines.append(f"{'conc':>4} | {'raw ASGI req/s':>15} {'p50':>6} {'p99':>6} | {'kserve/raw':>10} {'p50 x':>6}")
        for raw, v in zip(result["raw_asgi"]["sweep"], result["kserve"]["sweep"]):
            lines.append(
                f"{raw['concurrency']:>4} | {raw['req_per_s']:>15.0f} {raw['p50_ms']:>6.2f} {raw['p99_ms']:>6.2f} | "
                f"{v['ratio_to_raw_asgi']:>10.2f} {v['p50_to_raw_asgi']:>6.2f}"
            )
    return lines + shadow_rows(result)


def shadow_rows(result: dict) -> list[str]:
    """What a shadow version costs the default's answers on the kserve runtime, where the run measured it: each share's
    sweep against the plain runtime's, and the two figures issue 37 holds it to (c=32 throughput, c=1 p50)."""
    if "kserve_shadow" not in result:
        return []
    shadow = result["kserve_shadow"]
    lines = [
        f"The kserve runtime with a shadow (the same model as version {shadow['version']}, {shadow['serving_form']}), "
        "same archive, workers and rounds, against the plain runtime above:",
        f"{'conc':>4} {'share':>5} | {'req/s':>9} {'p50':>6} {'p90':>6} {'p99':>6} {'err':>4} | {'/plain':>6} "
        f"{'p50 +ms':>7}",
    ]
    for shadowed in shadow["configurations"]:
        for v in shadowed["sweep"]:
            lines.append(
                f"{v['concurrency']:>4} {shadowed['share']:>5g} | {v['req_per_s']:>9.0f} {v['p50_ms']:>6.2f} "
                f"{v['p90_ms']:>6.2f} {v['p99_ms']:>6.2f} {v['errors']:>4} | {v['ratio_to_baseline']:>6.2f} "
                f"{v['p50_over_baseline_ms']:>+7.3f}"
            )
    return lines + [shadow_cost_line(shadowed) for shadowed in shadow["configurations"]]


def shadow_cost_line(shadowed: dict) -> str:
    ratio, p50 = shadowed["c32_req_per_s_ratio"], shadowed["c1_p50_difference_ms"]
    return (
        f"shadow at share {shadowed['share']:g}: c=32 throughput "
        + ("not measured" if ratio is None else f"{ratio:.3f} of the plain runtime's")
        + ", c=1 p50 "
        + ("not measured" if p50 is None else f"{p50:+.3f} ms")
        + f"; {shadowed['comparisons']} pictures compared, {shadowed['disagreements']} disagreements"
    )


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


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """OUT.json (every figure) and OUT.png (the plot); returns both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, png_path)
    return json_path, png_path
