"""The config.properties files the kit writes (serving/torchserve/config.py) and what it reads back from them."""

from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.serving.torchserve import config

ROOT = Path(__file__).resolve().parent.parent


def properties(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_root_config_properties_is_the_kits_default_server_config():
    assert (ROOT / "config.properties").read_text() == config.properties()


def test_default_server_listens_on_loopback_only_with_model_api_off():
    props = properties((ROOT / "config.properties").read_text())
    assert props["inference_address"] == C.INFERENCE_URL == "http://127.0.0.1:8080"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["enable_model_api"] == "false"
    assert props["model_store"] == "model_store" and props["load_models"] == "mnist.mar"


def test_production_profile_is_generated_and_turns_tokens_on():
    text = (ROOT / "config.production.properties").read_text()
    assert text == config.properties("production")
    props = properties(text)
    assert props["disable_token_authorization"] == "false"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["enable_model_api"] == "false"


def test_both_profiles_cap_the_request_size_and_set_no_cors_origin():
    for name in ("config.properties", "config.production.properties"):
        props = properties((ROOT / name).read_text())
        assert int(props["max_request_size"]) == C.MAX_REQUEST_BYTES
        assert "cors_allowed_origin" not in props


def test_the_body_limit_is_the_configs_max_request_size(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text(config.properties())
    assert config.max_request_size(path) == (C.MAX_REQUEST_BYTES, str(path))


def test_a_config_without_max_request_size_has_torchserves_own_limit(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("inference_address=http://127.0.0.1:8080\n")
    assert config.max_request_size(path) == (C.TS_MAX_REQUEST_BYTES, f"TorchServe's default; {path} sets none")


def test_without_a_config_the_body_limit_is_the_kits(tmp_path):
    missing = tmp_path / "config.properties"
    assert config.max_request_size(missing) == (C.MAX_REQUEST_BYTES, f"the kit's default; no {missing}")
