from click.testing import CliRunner

from mnist_kit import server as mnist_server
from mnist_kit.cli import cli


def test_help_teaches_the_whole_flow():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for step in ("mnist-kit train", "mnist-kit archive", "torchserve --start", "torchserve --stop"):
        assert step in result.output


def test_predict_against_no_server_fails_with_a_clear_message(digits):
    url = f"http://127.0.0.1:{mnist_server.free_port()}"
    result = CliRunner().invoke(cli, ["predict", str(digits[0]), "--url", url])
    assert result.exit_code == 1
    assert f"cannot reach TorchServe at {url}" in result.output
    assert "Traceback" not in result.output


def test_predict_of_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "missing.png")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
