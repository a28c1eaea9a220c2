"""Operating the model on a real TorchServe: two versions side by side, a live default switch, scaling,
the handler's own metrics, explanations, and evaluation of what is served."""

import json
import shutil
import time

import pytest
from click.testing import CliRunner
from harness import TorchServe

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.packaging import archive
from mnist_kit.serving import client


@pytest.fixture(scope="module")
def two_versions(model_store, tiny_checkpoint, tmp_path_factory):
    """1.0 is the int8 archive, 2.0 the same weights in eager mode, both loaded at start."""
    store = tmp_path_factory.mktemp("ab_store")
    shutil.copy(model_store / "mnist.mar", store)
    archive.build(tiny_checkpoint, store, version="2.0", mode="eager")
    with TorchServe(store, load_models="mnist.mar,mnist-2.0.mar") as ts:
        yield ts


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_both_versions_serve_side_by_side(two_versions, digits):
    for version in ("1.0", "2.0"):
        answer = client.predict(digits[7].read_bytes(), url=two_versions.inference_url, model=f"mnist/{version}")
        assert answer["digit"] == 7


def test_the_default_version_switches_live(two_versions, digits):
    url, management = two_versions.inference_url, two_versions.management_url
    v2 = client.predict(digits[3].read_bytes(), url=url, model="mnist/2.0")["probabilities"]
    assert "mnist 1.0 (default)" in run("models", "--url", management, "describe", "mnist")
    try:
        run("models", "--url", management, "set-default", "mnist", "2.0")
        assert "mnist 2.0 (default)" in run("models", "--url", management, "describe", "mnist")
        assert client.predict(digits[3].read_bytes(), url=url)["probabilities"] == v2
    finally:
        run("models", "--url", management, "set-default", "mnist", "1.0")


def test_scaling_workers(two_versions):
    management = two_versions.management_url
    before = len(json.loads(two_versions.get(f"{management}/models/mnist"))[0]["workers"])
    try:
        run("models", "--url", management, "scale", "mnist", "--workers", "3")
        [description] = json.loads(two_versions.get(f"{management}/models/mnist"))
        assert len(description["workers"]) == 3 and all(w["status"] == "READY" for w in description["workers"])
    finally:
        run("models", "--url", management, "scale", "mnist", "--workers", str(before))


def test_register_with_model_api_off_says_how_to_turn_it_on(two_versions):
    result = CliRunner().invoke(cli, ["models", "--url", two_versions.management_url, "register", "mnist.mar"])
    assert result.exit_code == 1 and "enable_model_api=true" in result.output


def test_models_list_names_the_model(two_versions):
    assert "mnist" in run("models", "--url", two_versions.management_url, "list")


def test_handler_metrics_appear_in_prometheus(two_versions, digits):
    url = two_versions.inference_url
    for path in digits:
        client.predict(path.read_bytes(), url=url)
    with pytest.raises(client.ClientError):
        client.predict(b"not an image", url=url)
    metrics = ""
    deadline = time.monotonic() + 5 * C.METRICS_INTERVAL_S  # the handler reports once per interval
    while 'RejectedInputs{Reason="undecodable"' not in metrics and time.monotonic() < deadline:
        time.sleep(0.2)
        metrics = two_versions.get(f"{two_versions.metrics_url}/metrics").decode()
    assert 'PredictionsPerDigit{Digit="7",ModelName="mnist"' in metrics
    assert 'RejectedInputs{Reason="undecodable",ModelName="mnist"' in metrics
    assert "PreprocessingTime{" in metrics
    assert "ts_inference_requests_total" in metrics


def test_explanations_answer_attributions_for_the_predicted_digit(two_versions, digits):
    answer = client.explain(digits[2].read_bytes(), url=two_versions.inference_url)
    assert answer["digit"] == 2
    assert len(answer["attributions"]) == 28 and len(answer["attributions"][0]) == 28
    assert any(v != 0 for row in answer["attributions"] for v in row)


def test_explain_command_writes_the_overlay(two_versions, digits, tmp_path):
    out = tmp_path / "explain.png"
    assert ": 2; wrote" in run("explain", digits[2], "--out", out, "--url", two_versions.inference_url)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_against_the_live_endpoint_writes_the_reports(two_versions, tmp_path):
    output = run("evaluate", "--url", two_versions.inference_url, "--limit", "300", "--out", tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["images"] == 300 and report["accuracy"] > 90
    assert set(report["per_digit"]) == {str(d) for d in range(10)}
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert f"{report['accuracy']:.2f} %" in output


def test_the_default_recipe_evaluates_at_least_99_3_percent(trained_checkpoint, tmp_path):
    run("evaluate", "--checkpoint", trained_checkpoint, "--out", tmp_path)
    assert json.loads((tmp_path / "evaluation.json").read_text())["accuracy"] >= 99.3
