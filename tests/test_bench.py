"""`mnist-kit bench` runs end to end and reports sane figures (a tiny run: the real figures are in docs/PERFORMANCE.md)."""

import json

from click.testing import CliRunner

from mnist_kit.cli import cli


def test_bench_reports_throughput_latency_ratio_cold_start_and_preprocessing(model_store, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", "--archive", str(model_store / "mnist.mar"), "--concurrency", "1,4",
                                      "--seconds", "1", "--out", str(out)])
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
    assert set(figures["preprocess"]) == {"28×28 PNG", "280×280 RGBA canvas PNG", "1000×750 JPEG", "4000×3000 JPEG"}
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_a_bad_concurrency_list(model_store):
    result = CliRunner().invoke(cli, ["bench", "--archive", str(model_store / "mnist.mar"), "--concurrency", "a,b"])
    assert result.exit_code == 2 and "numbers separated by commas" in result.output
