"""The kserve runtime's production profile (every interface, a token on every request but health checks, over REST
and gRPC) started by `mnist-kit serve --profile production`, and the read-only management routes that let
`mnist-kit models` and the pads ask it which version it serves."""

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.serving import client
from mnist_kit.serving.kserve import auth as kserve_auth
from mnist_kit.serving.processes import free_port
from mnist_kit.ui.pad_client import Reader

# gRPC through tritonclient in a process of its own: its protos and kserve's cannot be loaded in one process.
GRPC_CALL = """
import sys, numpy as np, tritonclient.grpc as g
address, path, token = sys.argv[1:]
c = g.InferenceServerClient(address)
images = g.InferInput("images", [1], "BYTES")
images.set_data_from_numpy(np.array([open(path, "rb").read()], dtype=object))
headers = {"authorization": f"Bearer {token}"} if token else None
print(c.is_server_live(), c.is_model_ready("mnist"))
try:
    print(c.infer("mnist", [images], headers=headers).as_numpy("predict")[0])
except g.InferenceServerException as e:
    print(e.status(), e.message())
"""


@pytest.fixture(scope="module")
def production(model_store, tmp_path_factory):
    """`mnist-kit serve --runtime kserve --profile production` on free ports, in a home of its own."""
    home = tmp_path_factory.mktemp("kserve-production")
    env = {"TMPDIR": str(home), C.HOME_ENV: str(home), C.TOKEN_ENV: ""}
    http, grpc_port = free_port(), free_port()
    args = ["serve", "--runtime", "kserve", "--profile", "production", "--archive", str(model_store / "mnist.mar")]
    args += ["--http-port", str(http), "--grpc-port", str(grpc_port), "--workers", "1"]
    started = CliRunner().invoke(cli, args, env=env)
    try:
        assert started.exit_code == 0, started.output
        key = json.loads((home / C.KEY_FILE).read_text())["inference"]["key"]
        yield {"url": f"http://127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc_port}", "home": home, "key": key}
    finally:
        CliRunner().invoke(cli, ["stop"], env=env)


def status_of(url: str, token: str | None = None) -> int:
    try:
        client.request(url, token=token)
        return 200
    except client.ClientError as e:
        return e.status


def grpc(production, image, token=None) -> list[str]:
    argv = [sys.executable, "-c", GRPC_CALL, production["grpc"], str(image), token or ""]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()


def test_production_listens_on_every_interface(production):
    port = production["url"].rsplit(":", 1)[1]
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert f"0.0.0.0:{port}" in listening


def test_production_refuses_a_rest_request_without_the_token_with_torchserves_message(production, digits):
    with pytest.raises(client.ClientError) as refused:
        client.predict(digits[4].read_bytes(), url=production["url"])
    assert refused.value.status == 401 and refused.value.detail == kserve_auth.MESSAGE


def test_production_answers_a_rest_request_with_the_token(production, digits):
    assert client.predict(digits[4].read_bytes(), url=production["url"], token=production["key"])["digit"] == 4


def test_production_predict_reads_the_key_from_the_kits_home(production, digits):
    env = {C.HOME_ENV: str(production["home"]), C.TOKEN_ENV: ""}
    result = CliRunner().invoke(cli, ["predict", str(digits[6]), "--url", production["url"]], env=env)
    assert result.exit_code == 0 and result.output.startswith(f"{digits[6]}: 6 (")


def test_production_keeps_health_checks_open_and_everything_else_closed(production):
    url = production["url"]
    for path in ("/ping", "/v2/health/live", "/v2/health/ready", "/v2/models/mnist/ready", "/v1/models/mnist"):
        assert status_of(url + path) == 200, path
    for path in ("/v2/models/mnist", "/metrics", "/models", "/models/mnist"):
        assert status_of(url + path) == 401, path
        assert status_of(url + path, production["key"]) == 200, path


def test_production_grpc_refuses_a_call_without_the_token_but_not_health(production, digits):
    health, answer = grpc(production, digits[2])
    assert health == "True True"
    assert answer == f"StatusCode.UNAUTHENTICATED {kserve_auth.MESSAGE}"


def test_production_grpc_answers_a_call_with_the_token(production, digits):
    assert grpc(production, digits[2], production["key"])[1] == "2"


def test_the_key_file_is_readable_by_its_owner_only(production):
    assert stat.S_IMODE(os.stat(production["home"] / C.KEY_FILE).st_mode) == 0o600


@pytest.mark.unit
def test_a_key_from_the_environment_is_used_and_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv(C.TOKEN_ENV, "from-a-secret")
    assert kserve_auth.key(tmp_path / C.KEY_FILE) == "from-a-secret"
    assert not (tmp_path / C.KEY_FILE).exists()


@pytest.mark.unit
def test_a_new_key_is_written_in_torchserves_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(C.TOKEN_ENV, raising=False)
    token = kserve_auth.key(tmp_path / C.KEY_FILE)
    assert client.read_token(tmp_path / C.KEY_FILE) == client.read_token(tmp_path / C.KEY_FILE, "management") == token
    assert [p.name for p in tmp_path.iterdir()] == [C.KEY_FILE]


def test_models_describe_on_the_kserve_runtime_names_its_serving_form_and_the_libraries_it_loaded(kserve_runtime):
    result = CliRunner().invoke(cli, ["models", "--url", kserve_runtime.inference_url, "describe", "mnist"])
    assert result.exit_code == 0, result.output
    first, form, loaded = result.output.splitlines()
    assert first.startswith(f"mnist {C.MODEL_VERSION} (default): mnist.mar, batch {C.BATCH_SIZE} / 0 ms")
    assert form.startswith(f"mnist {C.MODEL_VERSION} serves onnx-")
    assert loaded.startswith("  loaded in its workers: ONNX Runtime 1.")  # torch too, once it has explained


def test_models_list_on_the_kserve_runtime_names_its_archive(kserve_runtime):
    result = CliRunner().invoke(cli, ["models", "--url", kserve_runtime.inference_url, "list"])
    assert result.exit_code == 0 and result.output == "mnist  (mnist.mar)\n"


def test_models_set_default_on_the_kserve_runtime_names_the_versions_it_serves(kserve_runtime):
    """set-default changes the routing live (routing.py); a version the runtime was not started with is a 404."""
    result = CliRunner().invoke(cli, ["models", "--url", kserve_runtime.inference_url, "set-default", "mnist", "2.0"])
    assert result.exit_code == 1 and "HTTP 404: version 2.0 is not served here (served: 1.0)" in result.output


def test_models_against_the_grpc_port_says_it_is_not_http(kserve_runtime):
    url = f"http://{kserve_runtime.grpc_address}"
    result = CliRunner().invoke(cli, ["models", "--url", url, "list"])
    assert result.exit_code == 1 and "does not answer HTTP/1.1" in result.output and "a gRPC port?" in result.output


def test_the_pads_reader_finds_the_version_on_the_kserve_runtime(kserve_runtime):
    nowhere = f"http://127.0.0.1:{free_port()}"
    reader = Reader(kserve_runtime.inference_url, management_url=nowhere)
    assert reader.status() == {
        "server": kserve_runtime.inference_url,
        "model": "mnist",
        "version": C.MODEL_VERSION,
        "running": True,
        "health": "Healthy",
    }


def test_management_reads_of_another_model_are_404(kserve_runtime):
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{kserve_runtime.inference_url}/models/other", timeout=10)
    assert missing.value.code == 404


@pytest.mark.unit
def test_serve_takes_a_profile_or_a_ts_config_not_both(tmp_path):
    args = ["serve", "--profile", "production", "--ts-config", str(tmp_path / "config.properties")]
    result = CliRunner().invoke(cli, args, env={C.HOME_ENV: str(tmp_path), "TMPDIR": str(tmp_path)})
    assert result.exit_code == 2 and "give --profile or --ts-config, not both" in result.output
