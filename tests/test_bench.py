"""`mnist-kit bench` runs end to end and reports sane figures (a tiny run: the real figures are in docs/PERFORMANCE.md),
and writes the tables of docs/PERFORMANCE.md from a bench JSON file."""

import contextlib
import json
import zipfile

from click.testing import CliRunner
from conftest import ROOT

from mnist_kit import constants as C
from mnist_kit.bench.costs import SAMPLE
from mnist_kit.bench.report import machine, report
from mnist_kit.bench.run import costs, shadow_archive, shadow_result, started_shadows, wrk
from mnist_kit.bench.tables import BEGIN, END, blocks, load, markdown
from mnist_kit.cli import cli
from mnist_kit.packaging import archive, mar


def test_bench_reports_throughput_latency_ratio_cold_start_and_preprocessing(model_store, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--archive",
            str(model_store / "mnist.mar"),
            "--concurrency",
            "1,4",
            "--seconds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ratio" in result.output and "cold start" in result.output
    figures = json.loads(out.with_suffix(".json").read_text())
    for name in ("kit", "ceiling"):
        assert [p["concurrency"] for p in figures[name]["sweep"]] == [1, 4]
        for point in figures[name]["sweep"]:
            assert point["req_per_s"] > 0 and point["errors"] == 0
            assert 0 < point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"]
        assert 0 < figures[name]["cold_start_s"] < 120
    assert all(0 < p["ratio_to_ceiling"] < 5 for p in figures["kit"]["sweep"])
    # scripts/setup.sh installs the kserve extra, so the default run measures the kserve runtime in the same rounds
    kserve = figures["kserve"]["sweep"]
    assert [p["concurrency"] for p in kserve] == [1, 4] and all(p["errors"] == 0 and p["req_per_s"] > 0 for p in kserve)
    assert 0 < figures["kserve"]["cold_start_s"] < 120 and "kserve runtime" in result.output
    v2 = figures["kit_v2"]["sweep"]
    assert [p["concurrency"] for p in v2] == [1, 4] and all(p["errors"] == 0 and p["req_per_s"] > 0 for p in v2)
    assert all(0 < p["ratio_to_raw"] < 5 for p in v2) and "Open Inference Protocol v2" in result.output
    assert set(figures["preprocess"]) == {"28×28 PNG", "280×280 RGBA canvas PNG", "1000×750 JPEG", "4000×3000 JPEG"}
    assert all(0 < r["decode_ms_median"] and 0 < r["ms_median"] for r in figures["preprocess"].values())
    lone = figures["lone_request"]
    assert figures["serving_form"].startswith(f"{lone['form']} (")
    assert lone["back_to_back_ms"] > 0 and lone["after_idle_ms"] > 0 and "after 3 ms idle" in result.output
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert figures["serving_form"].startswith(tuple(f"{form} (" for form in C.SERVING_FORMS))
    assert figures["machine"]["torch_cpu_capability"]
    assert f"measured on {figures['machine']['cpu']} (" in result.output
    # The whole server's resident memory, which mnist-kit export sizes pods by.
    assert 100 < figures["kit"]["memory_mib"] < 64_000 and "server memory after the sweep" in result.output


def test_the_machine_names_the_instruction_sets_behind_pytorchs_kernels():
    import torch

    described = machine()
    capability = torch.backends.cpu.get_cpu_capability()
    assert described["torch_cpu_capability"] == capability and described["cpus"] >= 1
    if capability in ("AVX2", "AVX512"):
        assert "AVX2" in described["isa"]
    if capability == "AVX512":
        assert "AVX-512" in described["isa"]


def test_bench_rejects_a_bad_concurrency_list(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--archive", str(tmp_path / "mnist.mar"), "--concurrency", "a,b"])
    assert result.exit_code == 2 and "numbers separated by commas" in result.output


def test_bench_refuses_to_measure_a_shadow_without_the_kserve_runtime(tmp_path):
    result = CliRunner().invoke(
        cli, ["bench", "--archive", str(tmp_path / "mnist.mar"), "--shadow", "--runtime", "torchserve"]
    )
    assert result.exit_code == 2 and "--shadow measures the kserve runtime" in result.output


def test_the_shadow_archive_is_the_same_model_under_another_version(untrained_checkpoint, tmp_path):
    original = archive.build(untrained_checkpoint, tmp_path / "store", mode="eager")
    shadow = shadow_archive(original, tmp_path / "shadow")
    assert mar.read(shadow).model == {**mar.read(original).model, "modelVersion": "shadow"}
    assert mar.read(shadow).config == mar.read(original).config
    before, after = zipfile.ZipFile(original), zipfile.ZipFile(shadow)
    assert sorted(before.namelist()) == sorted(after.namelist())
    assert [n for n in before.namelist() if before.read(n) != after.read(n)] == [mar.MANIFEST]


def test_the_shadow_servers_read_the_defaults_pictures_and_agree_with_an_identical_model(
    model_store, kserve_runtime, tmp_path
):
    """Share 1 reads every request, share 0.1 about a tenth; the same weights under another version never disagree."""
    with contextlib.ExitStack() as stack:
        servers = started_shadows(stack, model_store / "mnist.mar", tmp_path, workers=1, body=SAMPLE, form=None)
        servers["kserve"] = (kserve_runtime, 0.0)
        sweeps = {
            name: [wrk(f"{ks.inference_url}/predictions/mnist", SAMPLE, 1, seconds=1)]
            for name, (ks, _) in servers.items()
        }
        shadowed = shadow_result(servers, sweeps)
    full, tenth = shadowed["configurations"]
    assert (full["share"], tenth["share"]) == (1.0, 0.1) and full["disagreements"] == tenth["disagreements"] == 0
    assert full["comparisons"] >= full["sweep"][0]["requests"] > 100
    assert 0 < tenth["comparisons"] < 0.2 * tenth["sweep"][0]["requests"]
    assert shadowed["version"] == "shadow" and shadowed["serving_form"] in C.SERVING_FORMS
    assert (
        full["c1_p50_difference_ms"] == full["sweep"][0]["p50_over_baseline_ms"] and full["c32_req_per_s_ratio"] is None
    )


def test_a_shadows_cost_is_its_throughput_over_the_plain_runtimes_at_32_and_its_p50_over_it_at_1():
    baseline = [{**point(1, 2000.0), "p50_ms": 0.30}, point(32, 10000.0)]
    sweep = [{**point(1, 1900.0), "p50_ms": 0.34}, point(32, 8000.0)]
    assert costs(baseline, sweep) == {"c32_req_per_s_ratio": 0.8, "c1_p50_difference_ms": 0.04}
    assert [p["ratio_to_baseline"] for p in sweep] == [0.95, 0.8]
    assert [p["p50_over_baseline_ms"] for p in sweep] == [0.04, 0.0]


def point(concurrency: int, req_per_s: float, ratio: float | None = None) -> dict:
    return {
        "concurrency": concurrency,
        "req_per_s": req_per_s,
        "p50_ms": 1.5,
        "p90_ms": 2.25,
        "p99_ms": 4.0,
        "errors": 0,
        "generator_cpu": 0.1,
        **({"ratio_to_ceiling": ratio} if ratio else {}),
    }


RESULT = {
    "machine": {
        "cpu": "Some CPU",
        "isa": ["AVX2", "AVX-512"],
        "torch_cpu_capability": "AVX512",
        "cpus": 2,
        "processor": "x86_64",
        "python": "3.11.2",
        "torch": "2.14.1",
        "onnxruntime": "1.32.0",
        "torchserve": "0.12.0",
    },
    "serving_form": "onnx-int8",
    "settings": {"batch_size": 16, "max_batch_delay_ms": 1, "workers": 2, "seconds_per_point": 5, "body": "7.png"},
    "kit": {"cold_start_s": 3.5, "sweep": [point(1, 400.4, 0.7), point(32, 8726.0, 0.55)]},
    "ceiling": {"cold_start_s": 2.7, "sweep": [point(1, 572.0), point(32, 15803.0)]},
    "preprocess": {"28×28 PNG": {"ms_median": 0.0134}},
}


def test_markdown_writes_a_row_per_concurrency_and_names_the_machine():
    text = markdown(RESULT)
    assert (
        "on Some CPU (AVX2, AVX-512; PyTorch kernels AVX512), 2 CPU cores, Python 3.11.2, torch 2.14.1, ONNX Runtime "
        "1.32.0, TorchServe 0.12.0; serving form: onnx-int8: batch 16, max delay 1 ms, 2 workers" in text
    )
    assert "| 32 | 8 726 | 1.50 | 2.25 | 4.00 | 0 | 15 803 | 1.50 | 4.00 | 0.55 |" in text
    assert "| 28×28 PNG | 0.013 |" in text and "3.50 s (no-op handler: 2.70 s)" in text


def test_markdown_says_what_a_lone_request_costs_back_to_back_and_after_idling_when_the_run_measured_it():
    lone = {"form": "onnx-int8", "idle_gap_ms": 3.0, "back_to_back_ms": 0.5, "after_idle_ms": 1.25}
    text = markdown({**RESULT, "lone_request": lone})
    assert (
        "(onnx-int8: decode, normalise, forward one image), CPU ms: 0.500 back to back, 1.250 after 3 ms idle." in text
    )
    assert "back to back" not in markdown(RESULT)


def test_markdown_adds_the_v2_protocol_table_when_the_run_has_one():
    v2 = {"body": "v2 BYTES, one base64 PNG", "sweep": [point(1, 350.0), {**point(32, 7000.0), "ratio_to_raw": 0.8}]}
    v2["sweep"][0]["ratio_to_raw"] = 0.874
    text = markdown({**RESULT, "kit_v2": v2})
    assert "| 32 | 7 000 | 1.50 | 2.25 | 4.00 | 0 | 8 726 | 0.80 |" in text
    assert "Open Inference Protocol" not in markdown(RESULT)


def test_markdown_adds_the_kserve_runtimes_table_and_cold_start_when_the_run_has_them():
    kserve = {"cold_start_s": 2.2, "sweep": [point(1, 500.0), point(32, 5000.0)]}
    for k in kserve["sweep"]:
        k["ratio_to_kit"], k["ratio_to_ceiling"] = 0.57, 0.32
    text = markdown({**RESULT, "kserve": kserve})
    assert "| 32 | 5 000 | 1.50 | 2.25 | 4.00 | 0 | 0.57 | 0.32 |" in text
    assert "the kserve runtime, command to the first answer: 2.20 s" in text and "kserve" not in markdown(RESULT)


def shadowed(share: float, ratio: float, p50_over: float) -> dict:
    sweep = [{**point(1, 480.0), "ratio_to_baseline": 0.96, "p50_over_baseline_ms": p50_over}]
    sweep.append({**point(32, 5000.0 * ratio), "ratio_to_baseline": ratio, "p50_over_baseline_ms": 0.5})
    figures = {"c32_req_per_s_ratio": ratio, "c1_p50_difference_ms": p50_over}
    return {"share": share, "cold_start_s": 1.5, "sweep": sweep, "comparisons": 1000, "disagreements": 2, **figures}


KSERVE = {"cold_start_s": 2.2, "sweep": [{**point(1, 500.0), "ratio_to_kit": 1.2, "ratio_to_ceiling": 0.9}]}
KSERVE["sweep"].append({**point(32, 5000.0), "ratio_to_kit": 0.57, "ratio_to_ceiling": 0.32})
SHADOW = {
    "version": "shadow",
    "serving_form": "onnx-int8",
    "baseline": "kserve",
    "configurations": [shadowed(1.0, 0.8, 0.03), shadowed(0.1, 0.97, 0.01)],
}


def test_markdown_adds_each_shadow_shares_table_rows_and_cost_when_the_run_has_them():
    text = markdown({**RESULT, "kserve": KSERVE, "kserve_shadow": SHADOW})
    assert "same model as version `shadow`, `onnx-int8`" in text
    assert "| 32 | 1 | 4 000 | 1.50 | 2.25 | 4.00 | 0 | 0.80 | +0.500 |" in text
    assert "| 1 | 0.1 | 480 | 1.50 | 2.25 | 4.00 | 0 | 0.96 | +0.010 |" in text
    assert (
        "Shadow at share 1: c=32 throughput 0.800 of the plain runtime's, c=1 p50 +0.030 ms; 1000 pictures "
        "compared, 2 disagreements." in text
    )
    assert "shadow" not in markdown({**RESULT, "kserve": KSERVE})


def test_the_printed_report_shows_each_shadow_shares_rows_and_cost_when_the_run_has_them():
    preprocess = {"28×28 PNG": {"ms_median": 0.0134, "decode_ms_median": 0.012}}
    text = report({**RESULT, "preprocess": preprocess, "kserve": KSERVE, "kserve_shadow": SHADOW})
    assert "  32   0.1 |      4850   1.50   2.25   4.00    0 |   0.97  +0.500" in text
    assert "shadow at share 0.1: c=32 throughput 0.970 of the plain runtime's, c=1 p50 +0.010 ms" in text
    assert "shadow" not in report({**RESULT, "preprocess": preprocess, "kserve": KSERVE})


def test_markdown_into_a_file_replaces_only_the_block_of_that_json_file(tmp_path):
    results, doc = tmp_path / "some-cpu.json", tmp_path / "PERFORMANCE.md"
    results.write_text(json.dumps(RESULT))
    other = f"{BEGIN} docs/bench/other-cpu.json -->\nother table\n{END}\n"
    doc.write_text(f"# Before\n{other}{BEGIN} docs/bench/some-cpu.json -->\nold table\n{END}\nAfter\n")
    result = CliRunner().invoke(cli, ["bench", "--markdown", str(results), "--into", str(doc)])
    assert result.exit_code == 0, result.output
    assert doc.read_text() == (
        f"# Before\n{other}{BEGIN} docs/bench/some-cpu.json -->\n{markdown(RESULT)}\n{END}\nAfter\n"
    )


def test_markdown_into_a_file_without_a_block_for_that_json_file_says_what_to_add(tmp_path):
    results, doc = tmp_path / "new-cpu.json", tmp_path / "PERFORMANCE.md"
    results.write_text(json.dumps(RESULT))
    doc.write_text("# No tables yet\n")
    result = CliRunner().invoke(cli, ["bench", "--markdown", str(results), "--into", str(doc)])
    assert result.exit_code == 1 and "no bench block for new-cpu.json: add the lines" in result.output


def test_markdown_from_a_file_that_is_not_a_bench_result_fails_in_one_line(tmp_path):
    results = tmp_path / "bench.json"
    results.write_text('{"kit": {}}')
    result = CliRunner().invoke(cli, ["bench", "--markdown", str(results)])
    assert result.exit_code == 1 and "is not a bench result" in result.output and result.output.count("\n") == 1


def test_the_tables_of_docs_performance_are_those_of_the_bench_files_they_name():
    doc = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    found = blocks(doc)
    assert found and all(source.startswith("docs/bench/") for source, _, _ in found)
    for source, start, end in found:
        assert doc[start:end] == markdown(load(ROOT / source)) + "\n", source
