"""Integration: a real TorchServe (the Java server and its Python workers) serving the tiny model's archive."""

import io
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from harness import TorchServe
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.evaluation import kinds
from mnist_kit.serving import client
from mnist_kit.worker import preprocess


def digit_of(path) -> int:
    return int(path.stem)


def test_ping_reports_healthy(server):
    assert client.ping(server.inference_url) == {"status": "Healthy"}


def test_each_sample_digit_is_read_correctly(server, digits):
    for path in digits:
        answer = client.predict(path.read_bytes(), url=server.inference_url)
        assert answer["digit"] == digit_of(path), path
        assert len(answer["probabilities"]) == 10
        assert answer["confidence"] == max(answer["probabilities"])
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)


def test_served_probabilities_match_the_form_the_workers_chose_computed_in_process(server, model_store, digits):
    model = server.served_form(model_store / "mnist.mar")
    pixels = np.stack([preprocess.read_image(p.read_bytes()).pixels for p in digits])
    expected = np.exp(model(preprocess.normalize(pixels)))
    served = [client.predict(p.read_bytes(), url=server.inference_url)["probabilities"] for p in digits]
    assert np.allclose(served, expected, atol=1e-5)


def test_a_tight_crop_of_each_sample_digit_is_read_correctly(server, digits):
    """Cropped to the ink, which then touches all four edges, dark on white and three times larger."""
    for path in digits:
        pixels = np.asarray(Image.open(path))
        rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
        crop = Image.fromarray(255 - pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        buffer = io.BytesIO()
        crop.resize((crop.width * 3, crop.height * 3), Image.Resampling.BILINEAR).save(buffer, "PNG")
        assert client.predict(buffer.getvalue(), url=server.inference_url)["digit"] == digit_of(path), path


def test_a_phone_photo_of_each_sample_digit_stored_sideways_is_read_upright(server, digits):
    """Stored as the sensor reads it, with the EXIF Orientation tag (2 to 8) that every viewer applies."""
    rng = np.random.default_rng(0)
    for path, orientation in zip(digits, [6, 8, 3, 6, 8, 3, 2, 4, 5, 7]):
        photo = kinds.rotated_photo(np.asarray(Image.open(path)), rng, orientation)
        assert Image.open(io.BytesIO(photo)).getexif()[0x0112] == orientation
        assert client.predict(photo, url=server.inference_url)["digit"] == digit_of(path), (path, orientation)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload_as_in_the_readme(server, digits):
    out = subprocess.run(
        ["curl", "-sS", f"{server.inference_url}/predictions/mnist", "-T", str(digits[7])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["digit"] == 7


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, digits):
    batches_before = server.count_in_log("Backend received inference")
    requests = [digits[i % 10] for i in range(96)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda p: client.predict(p.read_bytes(), url=server.inference_url), requests))
    assert [a["digit"] for a in answers] == [digit_of(p) for p in requests]
    batches = server.count_in_log("Backend received inference") - batches_before
    assert 0 < batches < len(requests), "no request shared a batch"


def test_model_description_shows_batching_and_ready_workers(server):
    [description] = json.loads(server.get(f"{server.management_url}/models/mnist"))
    assert description["modelVersion"] == "1.0"
    assert description["batchSize"] == C.BATCH_SIZE and description["maxBatchDelay"] == C.MAX_BATCH_DELAY_MS
    assert description["workers"] and all(w["status"] == "READY" for w in description["workers"])


def test_predict_command_prints_digit_and_confidence(server, digits):
    result = CliRunner().invoke(cli, ["predict", str(digits[2]), str(digits[5]), "--url", server.inference_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{digits[2]}: 2 (") and lines[1].startswith(f"{digits[5]}: 5 (")


def test_predict_command_json_output(server, digits):
    result = CliRunner().invoke(cli, ["predict", str(digits[9]), "--url", server.inference_url, "--json"])
    answer = json.loads(result.output)
    assert answer["file"] == str(digits[9]) and answer["digit"] == 9


def test_no_cors_headers_by_default(server, digits):
    response = client.urllib.request.urlopen(
        client.urllib.request.Request(
            f"{server.inference_url}/predictions/mnist",
            data=digits[0].read_bytes(),
            method="POST",
            headers={"Content-Type": "image/png", "Origin": "http://evil.example"},
        )
    )
    assert response.status == 200
    assert response.headers.get("Access-Control-Allow-Origin") is None


@pytest.fixture(scope="module")
def production_server(model_store):
    """The production profile: token authorization on."""
    with TorchServe(model_store, production=True) as ts:
        yield ts


def test_production_profile_refuses_a_request_without_the_token(production_server, digits):
    with pytest.raises(client.ClientError, match="HTTP 40[01]"):
        client.predict(digits[1].read_bytes(), url=production_server.inference_url)


def test_production_profile_predict_sends_the_token_from_the_key_file_in_the_kits_home(
    production_server, digits, monkeypatch
):
    monkeypatch.setenv(C.HOME_ENV, str(production_server.workdir))  # where TorchServe was started
    result = CliRunner().invoke(cli, ["predict", str(digits[4]), "--url", production_server.inference_url])
    assert result.exit_code == 0, result.output
    assert ": 4 (" in result.output


def test_production_profile_predict_takes_the_token_as_an_option(production_server, digits):
    result = CliRunner().invoke(
        cli, ["predict", str(digits[6]), "--url", production_server.inference_url, "--token", production_server.token]
    )
    assert result.exit_code == 0, result.output
    assert ": 6 (" in result.output
