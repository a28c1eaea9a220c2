"""`mnist-kit bench`: load the served model against the serving stack's own ceiling."""

import json
from pathlib import Path

import click

from mnist_kit import constants as C
from mnist_kit.cli.main import cli, path_option


@cli.command()
@path_option("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar", dir_okay=False, help="The archive to serve.")
@click.option("--concurrency", default="1,8,32,64", show_default=True, help="Comma-separated connection counts.")
@click.option("--seconds", type=click.FloatRange(1), default=10, show_default=True, help="Load time per point.")
@click.option(
    "--runtime",
    default=None,
    help="Comma-separated runtimes to serve the archive on: torchserve (always: its no-op handler is the ceiling) "
    "and kserve. Default: both where the kserve extra is installed.",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="Also measure what a shadow version costs the kserve runtime's answers (at shares 1.0 and 0.1).",
)
@path_option(
    "--out",
    default=f"{C.REPORTS}/bench",
    dir_okay=False,
    help="Writes OUT.json (every figure) and OUT.png (throughput and p99 against concurrency).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of the table.")
@click.option(
    "--markdown",
    "markdown_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run nothing: print the Markdown tables of docs/PERFORMANCE.md from this bench JSON file "
    "(e.g. reports/bench.json).",
)
@click.option(
    "--into",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --markdown: replace the bench block of this file that names the JSON file, instead of printing.",
)
def bench(archive, concurrency, seconds, runtime, shadow, out, as_json, markdown_from, into):
    """Load-test the served model against the serving stack's own ceiling.

    \b
    Starts a private TorchServe (free ports) with ARCHIVE and another with a no-op handler (no decoding,
    no model) under the same settings: the most TorchServe itself can do here. Measures each one's cold
    start (torchserve --start to the first prediction), warms both up for SECONDS at the highest
    concurrency, then at each concurrency drives one, then the other, with wrk: req/s, p50/p90/p99,
    errors; the ratio says how close the kit gets to the ceiling. The kit is also driven with the same
    image as an Open Inference Protocol (v2) request, one base64 BYTES element, to show the protocol's
    cost. Also times preprocessing per image type (and its decoding alone), and in process a lone
    request's own work, back to back and after the core idles 3 ms: what lone requests pay beyond the
    no-op's. With the kserve runtime (--runtime torchserve,kserve, the default where the kserve extra is
    installed) the same archive is served on KServe's ModelServer too, with as many workers, and driven in
    the same rounds: its figures beside TorchServe's, its cold start beside theirs, and beside the Python
    HTTP ceiling it is held to (a bare ASGI app on uvicorn, as many workers, that reads the body and answers
    a fixed JSON). With --shadow, the kserve runtime is served twice more with the same workers, each with
    a second version shadowing the default (the same archive re-packed as version "shadow": identical
    weights, so next to no disagreements), at shares 1.0 and 0.1, and driven in the same rounds: each
    one's figures against the plain runtime's (throughput ratio, p50 difference). Run it on an otherwise
    idle machine; about 3 × (5 × SECONDS + 10) seconds, half as much again with kserve, and as much again
    with --shadow.

    \b
    The tables of docs/PERFORMANCE.md come from such runs' JSON, one file per CPU kind, never retyped:
      cp reports/bench.json docs/bench/amd-epyc-avx2.json
      mnist-kit bench --markdown docs/bench/amd-epyc-avx2.json --into docs/PERFORMANCE.md
    """
    from mnist_kit.bench import report, run, tables

    if into and not markdown_from:
        raise click.UsageError("--into goes with --markdown")
    if markdown_from:
        result = tables.load(markdown_from)
        if into:
            tables.write_markdown(result, into, markdown_from)
            click.echo(f"rewrote the bench tables of {into} from {markdown_from}")
        else:
            click.echo(tables.markdown(result))
        return
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter(
            "use numbers separated by commas, e.g. 1,8,32,64", param_hint="--concurrency"
        ) from None
    import importlib.util

    runtimes = [r.strip() for r in (runtime or "torchserve,kserve").split(",") if r.strip()]
    if runtime is None and importlib.util.find_spec("kserve") is None:
        runtimes = ["torchserve"]
    if "torchserve" not in runtimes or not set(runtimes) <= set(C.RUNTIMES):
        raise click.BadParameter(
            "torchserve and optionally kserve, e.g. torchserve,kserve (the ceiling is TorchServe's no-op handler)",
            param_hint="--runtime",
        )
    if shadow and "kserve" not in runtimes:
        raise click.BadParameter(
            "--shadow measures the kserve runtime: name it (--runtime torchserve,kserve) and install its extra",
            param_hint="--runtime",
        )
    result = run.run(
        archive,
        levels,
        seconds,
        kserve="kserve" in runtimes,
        shadow=shadow,
        progress=lambda m: click.echo(m, err=True),
    )
    json_path, png_path = report.write(result, out)
    click.echo(json.dumps(result, indent=2) if as_json else report.report(result))
    if not as_json:
        click.echo(f"wrote {json_path} and {png_path}")
