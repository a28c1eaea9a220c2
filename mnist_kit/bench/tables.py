"""The Markdown tables of docs/PERFORMANCE.md, written from bench JSON files kept in docs/bench/, never retyped.

One block per CPU kind, each between a begin marker that names its JSON file and an end marker:
`mnist-kit bench --markdown docs/bench/NAME.json --into docs/PERFORMANCE.md` replaces the block of NAME.json.
"""

import json
from pathlib import Path

from mnist_kit.bench.report import describe_machine, lone_request_line, shadow_cost_line
from mnist_kit.errors import KitError

BEGIN, END = "<!-- bench tables: mnist-kit bench --markdown", "<!-- end of bench tables -->"


def load(path: Path) -> dict:
    """A bench JSON file (reports/bench.json), checked to hold what markdown() reads."""
    try:
        result = json.loads(Path(path).read_text())
        result["kit"]["sweep"], result["ceiling"]["sweep"], result["preprocess"], result["machine"]["cpus"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{path} is not a bench result written by mnist-kit bench ({type(e).__name__}: {e})") from None
    return result


def number(value: float, decimals: int = 0) -> str:
    return f"{value:,.{decimals}f}".replace(",", " ")


def markdown(result: dict) -> str:
    """The serving and preprocessing tables of docs/PERFORMANCE.md, with the machine they were measured on."""
    settings = result["settings"]
    lines = [
        f"Measured by `mnist-kit bench` on {describe_machine(result)}: batch {settings['batch_size']}, max delay "
        f"{settings['max_batch_delay_ms']} ms, {settings['workers']} workers, "
        f"{number(settings['seconds_per_point'])} s per point, body `{settings['body']}`.",
        "",
        "| conc | mnist-kit req/s | p50 ms | p90 ms | p99 ms | errors | ceiling req/s | ceiling p50 | ceiling p99 "
        "| ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, c in zip(result["kit"]["sweep"], result["ceiling"]["sweep"]):
        ceiling = f"{number(c['req_per_s'])} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f}"
        lines.append(f"{cells(k)} {ceiling} | {k['ratio_to_ceiling']:.2f} |")
    lines += runtime_tables(result)
    kserve_start = (
        f"; the kserve runtime, command to the first answer: {result['kserve']['cold_start_s']:.2f} s"
        if "kserve" in result
        else ""
    )
    if "worker_rss_mib" in result.get("kserve", {}):  # bench files from before the torch-free runtime have none
        ks = result["kserve"]
        lines += [
            "",
            f"The kserve runtime served `{ks['serving_form']}`; each worker {max(ks['worker_rss_mib']):.0f} MiB "
            f"resident at most, the whole server {ks['memory_mib']} MiB (TorchServe's: {result['kit']['memory_mib']} "
            "MiB, frontend and workers, shared pages counted once).",
        ]
    lines += [
        "",
        f"Cold start (`torchserve --start` to the first answer): {result['kit']['cold_start_s']:.2f} s "
        f"(no-op handler: {result['ceiling']['cold_start_s']:.2f} s){kserve_start}.",
        "",
        "| image | preprocessing ms, median on one core | of which decoding |",
        "|---|---:|---:|",
        *(f"| {name} | {r['ms_median']:.3f} | {decoding(r)} |" for name, r in result["preprocess"].items()),
    ]
    if result.get("lone_request"):  # bench files from before it have none
        line = lone_request_line(result["lone_request"])
        lines += ["", line[0].upper() + line[1:] + "."]
    return "\n".join(lines)


def runtime_tables(result: dict) -> list[str]:
    """The tables beside the TorchServe sweep, where the bench file has them: the v2 protocol, the kserve runtime,
    and a bare ASGI app."""
    lines = []
    if "kit_v2" in result:  # bench files from before the v2 line have none
        lines += [
            "",
            "The same image through the Open Inference Protocol (v2: one base64 PNG in a BYTES input), same server:",
            "",
            "| conc | v2 req/s | p50 ms | p90 ms | p99 ms | errors | raw PNG req/s | v2 / raw |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, v in zip(result["kit"]["sweep"], result["kit_v2"]["sweep"]):
            lines.append(f"{cells(v)} {number(k['req_per_s'])} | {v['ratio_to_raw']:.2f} |")
    if "kserve" in result:  # bench files from before the kserve runtime have none
        lines += [
            "",
            "The same image on the kserve runtime (KServe's ModelServer), same archive, measured in the same rounds:",
            "",
            "| conc | kserve req/s | p50 ms | p90 ms | p99 ms | errors | / mnist-kit on TorchServe | / ceiling |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in result["kserve"]["sweep"]:
            lines.append(f"{cells(v)} {v['ratio_to_kit']:.2f} | {v['ratio_to_ceiling']:.2f} |")
    if "raw_asgi" in result:  # bench files from before issue 32 have none
        lines += [
            "",
            "Against what Python HTTP does on the same machine, in the same rounds: a bare ASGI app on uvicorn "
            "(httptools, uvloop, as many workers) that reads the body and answers a fixed JSON:",
            "",
            "| conc | raw ASGI req/s | p50 ms | p99 ms | kserve / raw ASGI req/s | kserve p50 / raw ASGI p50 |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for raw, v in zip(result["raw_asgi"]["sweep"], result["kserve"]["sweep"]):
            lines.append(
                f"| {raw['concurrency']} | {number(raw['req_per_s'])} | {raw['p50_ms']:.2f} | {raw['p99_ms']:.2f} | "
                f"{v['ratio_to_raw_asgi']:.2f} | {v['p50_to_raw_asgi']:.1f} |"
            )
    return lines + shadow_table(result)


def shadow_table(result: dict) -> list[str]:
    """What a shadow version cost the kserve runtime's answers, where the bench file has it (`bench --shadow`)."""
    if "kserve_shadow" not in result:
        return []
    shadow = result["kserve_shadow"]
    lines = [
        "",
        f"The kserve runtime with a shadow version (the same model as version `{shadow['version']}`, "
        f"`{shadow['serving_form']}`), same archive, workers and rounds, against the runtime above without one:",
        "",
        "| conc | shadow share | req/s | p50 ms | p90 ms | p99 ms | errors | / no shadow | p50 over no shadow, ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shadowed in shadow["configurations"]:
        for v in shadowed["sweep"]:
            lines.append(
                f"| {v['concurrency']} | {shadowed['share']:g} | {number(v['req_per_s'])} | {v['p50_ms']:.2f} | "
                f"{v['p90_ms']:.2f} | {v['p99_ms']:.2f} | {v['errors']} | {v['ratio_to_baseline']:.2f} | "
                f"{v['p50_over_baseline_ms']:+.3f} |"
            )
    costs = [shadow_cost_line(shadowed) for shadowed in shadow["configurations"]]
    return lines + ["", " ".join(line[0].upper() + line[1:] + "." for line in costs)]


def cells(point: dict) -> str:
    """A sweep point's first cells: concurrency, throughput, latencies, errors."""
    return (
        f"| {point['concurrency']} | {number(point['req_per_s'])} | {point['p50_ms']:.2f} | {point['p90_ms']:.2f} | "
        f"{point['p99_ms']:.2f} | {point['errors']} |"
    )


def decoding(figures: dict) -> str:
    return f"{figures['decode_ms_median']:.3f}" if "decode_ms_median" in figures else "not measured"


def blocks(text: str) -> list[tuple[str, int, int]]:
    """(JSON file named by the begin marker, start, end) of each bench block of a document."""
    found, at = [], 0
    while (begin := text.find(BEGIN, at)) >= 0:
        line_end = text.index("\n", begin)
        end = text.find(END, line_end)
        if end < 0:
            break
        source = text[begin + len(BEGIN) : line_end].split()[0]
        found.append((source, line_end + 1, end))
        at = end
    return found


def write_markdown(result: dict, path: Path, source: Path) -> None:
    """Replace the block of `path` (docs/PERFORMANCE.md) whose begin marker names `source`'s file with
    markdown(result)."""
    text = Path(path).read_text()
    for named, start, end in blocks(text):
        if Path(named).name == Path(source).name:
            Path(path).write_text(text[:start] + markdown(result) + "\n" + text[end:])
            return
    raise KitError(
        f"{path} has no bench block for {Path(source).name}: add the lines "
        f"'{BEGIN} docs/bench/{Path(source).name} --into {path} -->' and '{END}' where its tables go"
    )
