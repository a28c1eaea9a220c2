from pathlib import Path

from mnist_kit import constants as C
from mnist_kit import server as mnist_server

ROOT = Path(__file__).resolve().parent.parent


def properties(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_root_config_properties_is_the_kits_default_server_config():
    assert (ROOT / "config.properties").read_text() == mnist_server.server_config()


def test_default_server_listens_on_loopback_only_with_model_api_off():
    config = properties((ROOT / "config.properties").read_text())
    assert config["inference_address"] == C.INFERENCE_URL == "http://127.0.0.1:8080"
    assert config["management_address"] == "http://127.0.0.1:8081"
    assert config["metrics_address"] == "http://127.0.0.1:8082"
    assert config["enable_model_api"] == "false"
    assert config["model_store"] == "model_store" and config["load_models"] == "mnist.mar"


def test_production_profile_is_generated_and_turns_tokens_on():
    text = (ROOT / "config.production.properties").read_text()
    assert text == mnist_server.server_config(production=True)
    config = properties(text)
    assert config["disable_token_authorization"] == "false"
    assert config["management_address"] == "http://127.0.0.1:8081"
    assert config["enable_model_api"] == "false"


def test_both_profiles_cap_the_request_size_and_set_no_cors_origin():
    for name in ("config.properties", "config.production.properties"):
        config = properties((ROOT / name).read_text())
        assert int(config["max_request_size"]) == C.MAX_REQUEST_BYTES
        assert "cors_allowed_origin" not in config


def test_the_body_limit_is_the_configs_max_request_size(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text(mnist_server.server_config())
    assert mnist_server.max_request_size(config) == (C.MAX_REQUEST_BYTES, str(config))


def test_a_config_without_max_request_size_has_torchserves_own_limit(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:8080\n")
    assert mnist_server.max_request_size(config) == (
        C.TS_MAX_REQUEST_BYTES,
        f"TorchServe's default; {config} sets none",
    )


def test_without_a_config_the_body_limit_is_the_kits(tmp_path):
    missing = tmp_path / "config.properties"
    assert mnist_server.max_request_size(missing) == (C.MAX_REQUEST_BYTES, f"the kit's default; no {missing}")
