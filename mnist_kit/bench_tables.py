"""The Markdown tables of docs/PERFORMANCE.md, written from a bench JSON file (reports/bench.json), never retyped.

`mnist-kit bench --markdown reports/bench.json --into docs/PERFORMANCE.md` replaces what lies between the markers.
"""

import json
from pathlib import Path

from mnist_kit.bench import describe_machine
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
        lines.append(
            f"| {k['concurrency']} | {number(k['req_per_s'])} | {k['p50_ms']:.2f} | {k['p90_ms']:.2f} | "
            f"{k['p99_ms']:.2f} | {k['errors']} | {number(c['req_per_s'])} | {c['p50_ms']:.2f} | "
            f"{c['p99_ms']:.2f} | {k['ratio_to_ceiling']:.2f} |"
        )
    if "kit_v2" in result:  # bench files from before the v2 line have none
        lines += [
            "",
            "The same image through the Open Inference Protocol (v2: one base64 PNG in a BYTES input), same server:",
            "",
            "| conc | v2 req/s | p50 ms | p90 ms | p99 ms | errors | raw PNG req/s | v2 / raw |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, v in zip(result["kit"]["sweep"], result["kit_v2"]["sweep"]):
            lines.append(
                f"| {v['concurrency']} | {number(v['req_per_s'])} | {v['p50_ms']:.2f} | {v['p90_ms']:.2f} | "
                f"{v['p99_ms']:.2f} | {v['errors']} | {number(k['req_per_s'])} | {v['ratio_to_raw']:.2f} |"
            )
    lines += [
        "",
        f"Cold start (`torchserve --start` to the first answer): {result['kit']['cold_start_s']:.2f} s "
        f"(no-op handler: {result['ceiling']['cold_start_s']:.2f} s).",
        "",
        "| image | preprocessing ms, median on one core |",
        "|---|---:|",
        *(f"| {name} | {r['ms_median']:.3f} |" for name, r in result["preprocess"].items()),
    ]
    return "\n".join(lines)


def write_markdown(result: dict, path: Path) -> None:
    """Replace the tables between the bench markers of `path` (docs/PERFORMANCE.md) with markdown(result)."""
    text = Path(path).read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise KitError(f"{path} has no bench markers: a line starting {BEGIN!r}, later a line {END!r}")
    start = text.index("\n", start) + 1
    Path(path).write_text(text[:start] + markdown(result) + "\n" + text[end:])
