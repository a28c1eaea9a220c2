"""`mnist-kit serve` says plainly what would make `torchserve --start` fail, before starting anything."""

import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_kit.cli import cli
from mnist_kit.serving.processes import free_port
from mnist_kit.serving.torchserve import config


def config_file(tmp_path, store, port=None) -> str:
    path = tmp_path / "config.properties"
    path.write_text(
        config.properties(
            inference_port=port or free_port(),
            management_port=free_port(),
            metrics_port=free_port(),
            model_store=store,
        )
    )
    return str(path)


def serve(tmp_path, config_path):
    return CliRunner().invoke(cli, ["serve", "--ts-config", config_path], env={"TMPDIR": str(tmp_path)})


def test_an_empty_model_store_says_to_train_and_archive_first(tmp_path):
    (tmp_path / "store").mkdir()
    result = serve(tmp_path, config_file(tmp_path, tmp_path / "store"))
    assert result.exit_code == 1
    assert "has no mnist.mar: train and archive first (mnist-kit train && mnist-kit archive)" in result.output


@pytest.fixture
def named_store(tmp_path) -> Path:
    """A model store naming mnist.mar: the checks below come before any archive is read, so no model is needed."""
    store = tmp_path / "named_store"
    store.mkdir()
    (store / "mnist.mar").write_bytes(b"")
    return store


def test_a_taken_port_is_named(tmp_path, named_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, config_file(tmp_path, named_store, port))
    assert result.exit_code == 1
    assert f"port {port} (inference_address" in result.output and "is taken by another program" in result.output


def test_a_running_server_is_named_with_how_to_stop_it(tmp_path, named_store):
    (tmp_path / ".model_server.pid").write_text(str(os.getpid()))
    result = serve(tmp_path, config_file(tmp_path, named_store))
    assert result.exit_code == 1
    assert f"TorchServe is already running (pid {os.getpid()}): stop it first with `mnist-kit stop`" in result.output


def test_a_missing_config_file_is_named(tmp_path):
    result = serve(tmp_path, str(tmp_path / "nowhere.properties"))
    assert result.exit_code == 1 and "nowhere.properties not found" in result.output
