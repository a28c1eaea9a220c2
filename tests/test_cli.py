"""The command line as a user meets it: help that teaches, one-line failures, predict's answers and errors per file."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from conftest import ROOT
from harness import in_thread

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.paths import home
from mnist_kit.serving import processes
from mnist_kit.serving.torchserve import config
from mnist_kit.serving.torchserve import launcher as torchserve_launcher


def test_help_teaches_the_whole_flow():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for step in ("mnist-kit train", "mnist-kit archive", "mnist-kit serve", "mnist-kit predict", "mnist-kit stop"):
        assert step in result.output
    assert "torchserve --start --ts-config config.properties --ncs" in result.output  # what serve runs


def test_the_command_line_loads_without_torch_numpy_or_onnxruntime():
    """`mnist-kit --help` and the commands that only talk to a server import none of them: they answer at once."""
    code = (
        "import sys; from mnist_kit.cli import cli; print(sorted({'torch', 'numpy', 'onnxruntime'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_command_whose_extra_is_not_installed_names_the_extra(tmp_path):
    code = "import sys; sys.modules['torch'] = None; from mnist_kit.cli import cli; cli(['train', '--limit', '10'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "Error: this command needs torch, which is not installed here: pip install 'mnist-kit[train]'"
    )


def test_predict_against_no_server_fails_with_a_clear_message(digits):
    url = f"http://127.0.0.1:{processes.free_port()}"
    result = CliRunner().invoke(cli, ["predict", str(digits[0]), "--url", url])
    assert result.exit_code == 1
    assert f"cannot reach TorchServe at {url}" in result.output and "start it with `mnist-kit serve`" in result.output
    assert "Traceback" not in result.output


def test_predict_stops_at_the_first_file_when_the_server_cannot_be_reached(digits):
    url = f"http://127.0.0.1:{processes.free_port()}"
    result = CliRunner().invoke(cli, ["predict", *map(str, digits[:3]), "--url", url, "--retries", "0"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"Error: cannot reach TorchServe at {url}")


def nine_mib_file(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" + bytes(9 * 2**20 - 4))
    return path


def test_predict_does_not_send_a_file_over_the_servers_max_request_size(tmp_path):
    config_path = tmp_path / "config.properties"
    config_path.write_text(config.properties())  # the kit's: max_request_size 8 MiB
    big, url = nine_mib_file(tmp_path), f"http://127.0.0.1:{processes.free_port()}"
    result = CliRunner().invoke(cli, ["predict", str(big), "--url", url, "--ts-config", str(config_path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{big}: error: not sent: 9 MiB (9,437,184 bytes) is over the server's max_request_size of 8 MiB "
        f"({config_path})",
        "Error: 1 of 1 files not read",
    ]  # and no "cannot reach": nothing was sent to the dead address


def test_predict_answers_every_file_and_names_each_one_it_cannot(server, digits, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = CliRunner().invoke(
        cli, ["predict", str(digits[7]), str(bad), str(digits[2]), "--url", server.inference_url]
    )
    assert result.exit_code == 1
    answers = result.stdout.splitlines()
    assert (
        len(answers) == 2 and answers[0].startswith(f"{digits[7]}: 7 (") and answers[1].startswith(f"{digits[2]}: 2 (")
    )
    failure, summary = result.stderr.splitlines()
    assert failure.startswith(f"{bad}: error: HTTP 400: not a decodable image: send PNG, JPEG")
    assert summary == "Error: 1 of 3 files not read"


def test_predict_json_is_one_object_per_file_with_failures_as_error_and_status(server, digits, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    args = ["predict", str(bad), str(digits[4]), "--url", server.inference_url, "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    failure, answer = map(json.loads, result.stdout.splitlines())
    assert failure["file"] == str(bad) and failure["status"] == 400 and "not a decodable image" in failure["error"]
    assert set(failure) == {"file", "error", "status"}
    assert answer["file"] == str(digits[4]) and answer["digit"] == 4


def test_predict_names_a_file_the_server_dropped_over_its_max_request_size_and_goes_on(server, digits, tmp_path):
    """The server (max_request_size 8 MiB) is told to the CLI as allowing 64 MiB, so the file is sent: TorchServe
    closes the connection on it (tests/test_fuzz.py), and the next file is still answered."""
    config_path = tmp_path / "config.properties"
    config_path.write_text(f"max_request_size={64 * 2**20}\n")
    big = nine_mib_file(tmp_path)
    args = ["predict", str(big), str(digits[1]), "--url", server.inference_url, "--ts-config", str(config_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{big}: error: the server closed the connection while receiving a body of 9,437,184 bytes, likely over "
        "its max_request_size (8 MiB in the kit's config.properties)"
    )
    assert result.stdout.startswith(f"{digits[1]}: 1 (")


def test_predict_of_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "missing.png")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_kit_error_is_one_line_with_its_exit_code(tmp_path):
    result = CliRunner().invoke(cli, ["archive", "--serialized-file", str(tmp_path / "none.pt")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_missing_mnist_files_exit_3_not_clicks_usage_code(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_kit.training.mnist._download", lambda data_dir: None)
    result = CliRunner().invoke(cli, ["evaluate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3 and "MNIST file" in result.output and "Traceback" not in result.output


def test_bench_with_a_file_that_is_not_an_archive_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.mar"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(cli, ["bench", "--archive", str(bad)])
    assert result.exit_code == 1 and "is not a TorchServe archive" in result.output and result.output.count("\n") == 1


def test_bench_without_wrk_says_how_to_install_it(tmp_path, untrained_checkpoint):
    result = CliRunner().invoke(cli, ["bench", "--archive", str(untrained_checkpoint)], env={"PATH": str(tmp_path)})
    assert result.exit_code == 1 and "wrk is not installed" in result.output


def test_the_home_defaults_to_the_checkout_the_kit_runs_from(monkeypatch):
    monkeypatch.delenv(C.HOME_ENV, raising=False)
    assert home() == ROOT


def test_commands_work_from_any_directory_with_mnist_kit_home(untrained_checkpoint, tmp_path):
    kit_home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (kit_home / "checkpoints").mkdir(parents=True)
    elsewhere.mkdir()
    (kit_home / "checkpoints" / "mnist_sd.pt").write_bytes(untrained_checkpoint.read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "mnist_kit", "archive", "--mode", "eager"],
        cwd=elsewhere,
        env={**os.environ, C.HOME_ENV: str(kit_home)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (kit_home / "model_store" / "mnist.mar").is_file() and list(elsewhere.iterdir()) == []


def test_a_path_the_user_types_stays_relative_to_the_current_directory(untrained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(C.HOME_ENV, str(tmp_path / "home"))
    result = CliRunner().invoke(
        cli, ["archive", "--mode", "eager", "--serialized-file", str(untrained_checkpoint), "--export-path", "store"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "store" / "mnist.mar").is_file() and not (tmp_path / "home").exists()


def test_predict_says_an_answers_flags_in_words_beside_the_digit():
    from mnist_kit.cli.querying import answer_line

    several = {"digit": 8, "confidence": 0.97, "flags": ["several_digits"], "digits": [3, 8]}
    assert answer_line("38.png", several) == "38.png: 8 (97.0 %): several digits (3 8)"
    spread = {"digit": 4, "confidence": 0.1, "flags": ["not_a_digit", "low_confidence"]}
    assert answer_line("x.png", spread) == "x.png: 4 (10.0 %): not a digit, low confidence"
    assert answer_line("7.png", {"digit": 7, "confidence": 0.999, "flags": []}) == "7.png: 7 (99.9 %)"


def test_serve_on_torchserve_refuses_the_kserve_runtimes_options_naming_them(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--workers", "3", "--http-port", "9000"], env={C.HOME_ENV: str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "--http-port and --workers configure the kserve runtime (--runtime kserve)" in result.output


def test_serve_on_kserve_refuses_torchserves_options_naming_them(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--runtime", "kserve", "--ts-config", "config.properties"], env={C.HOME_ENV: str(tmp_path)}
    )
    assert result.exit_code == 2 and "--ts-config configures TorchServe" in result.output


def test_a_fine_tune_refuses_the_options_it_would_ignore(tmp_path):
    argv = ["train", "--feedback", "--no-augment", "--force", "--out", str(tmp_path / "sd.pt")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    assert "--augment/--no-augment and --force are for training from scratch" in result.output


def test_waiting_for_a_server_whose_management_api_refuses_the_token_says_so_before_the_timeout(tmp_path, monkeypatch):
    """After C.TOKEN_GRACE_S of refusals (made shorter here: the test is about the message, not the wait)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"code": 401, "type": "InvalidKeyException", "message": "Token Authorization failed"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    monkeypatch.setattr(C, "TOKEN_GRACE_S", 0.5)
    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), Refusing)) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(processes.ServerError, match="refuses the token .*Token Authorization failed"):
            torchserve_launcher.wait_models_ready(url, 120, tmp_path / "log", token=lambda: "a stale key")
