from pathlib import Path

import mnist_constants as C
import mnist_server

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
