"""The serving image and the one-machine compose file, checked statically (no registry or container runtime is
needed): what the Dockerfile installs and runs, as whom, and what it exposes; and the entrypoint, run for real."""

import json
import re
import signal
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from conftest import ROOT
from harness import in_thread

from mnist_kit import constants as C
from mnist_kit.deploy import entrypoint, export, manifests
from mnist_kit.deploy.resources import Resources
from mnist_kit.serving.processes import free_port

CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first (the ARGs before the first FROM are no stage's)."""
    result = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def runtime(dockerfile) -> list[tuple[str, str]]:
    [runtime] = [s for s in stages(dockerfile) if s[0][1].endswith(" AS runtime")]
    return runtime


def pins() -> dict[str, str]:
    """pyproject.toml's exact pins and ranges, "==0.12.0" or ">=2.14.1,<2.16" (tomllib is Python 3.11+; the kit
    supports 3.10)."""
    return dict(re.findall(r'"([\w-]+)([=<>][^"]+)"', (ROOT / "pyproject.toml").read_text()))


def values(stage, name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def test_the_image_is_the_runtime_kserve_starts_and_the_kit_pins(runtime, dockerfile):
    """One structural check of the Dockerfile against what the kit decides elsewhere (its pins, its serving user,
    ports and paths, KServe's runtime command): what could drift apart, not the file restated line by line."""
    commands = " ".join(values(runtime, "RUN"))
    # The CPU wheels first (no CUDA gigabytes in the image), PyPI's where their index does not answer.
    assert f"ARG TORCH_INDEX={CPU_WHEELS}" in dockerfile
    assert f'pip install --index-url "$TORCH_INDEX" "torch{pins()["torch"]}"' in commands
    assert "onnxruntime" in commands
    assert f"torchserve{pins()['torchserve']}" in commands and "openjdk-17-jre-headless" in commands
    assert values(runtime, "USER")[-1] == str(C.SERVING_USER)
    assert all(values(stage, "USER") in ([], [str(C.SERVING_USER)]) for stage in stages(dockerfile))  # never root
    assert values(runtime, "EXPOSE") == [f"{C.INFERENCE_PORT} {C.METRICS_PORT} {C.HEALTH_PORT}"]
    [env] = values(runtime, "ENV")
    assert f"MNIST_KIT_DRAIN_SECONDS={C.DRAIN_S}" in env and f"MNIST_KIT_HEALTH_PORT={C.HEALTH_PORT}" in env
    [healthcheck] = values(runtime, "HEALTHCHECK")
    assert f"http://127.0.0.1:{C.INFERENCE_PORT}/ping" in healthcheck
    [cmd], [entrypoint] = values(runtime, "CMD"), values(runtime, "ENTRYPOINT")
    assert yaml.safe_load(cmd) == [
        "torchserve",
        "--start",
        "--foreground",
        f"--model-store={C.DEPLOY_MODEL_STORE}",
        f"--ts-config={C.DEPLOY_CONFIG}",
    ]
    assert yaml.safe_load(entrypoint)[:3] == ["tini", "-g", "--"]
    [model] = [s for s in stages(dockerfile) if s[0][1] == "runtime AS model"]
    assert [args.split()[-1] for args in values(model, "COPY")] == [
        f"{C.DEPLOY_MODEL_STORE}/",
        f"{C.DEPLOY_CONFIG.rsplit('/', 1)[0]}/",
    ]
    assert stages(dockerfile)[-1][0] == ("FROM", "runtime")  # a plain build makes the runtime


def test_the_kserve_image_runs_the_server_as_the_exports_do(dockerfile):
    """The kserve target against the kit: the kit installed with its kserve extra alone (no torch, no Java), user
    1000, REST and gRPC exposed, and the command the exported manifests run (less --workers, which they size per
    pod)."""
    [kserve] = [s for s in stages(dockerfile) if s[0][1].endswith(" AS kserve")]
    commands = " ".join(values(kserve, "RUN"))
    assert '"/tmp/mnist-kit[kserve]"' in commands and "torch" not in commands and "openjdk" not in commands
    assert values(kserve, "USER") == [str(C.SERVING_USER)]
    assert values(kserve, "EXPOSE") == [f"{C.INFERENCE_PORT} {C.KSERVE_GRPC_PORT}"]
    assert f"MNIST_KIT_DRAIN_SECONDS={C.DRAIN_S}" in values(kserve, "ENV")[0]
    [healthcheck] = values(kserve, "HEALTHCHECK")
    assert f"http://127.0.0.1:{C.INFERENCE_PORT}/v2/health/ready" in healthcheck
    pod = Resources(cpus=2, memory_mib=1024, scale_target=32, source="test")
    exported = manifests.kserve_container("image", pod=pod, archive_name="mnist.mar")["args"]
    [cmd] = values(kserve, "CMD")
    assert yaml.safe_load(cmd) == [a for a in exported if not a.startswith("--workers=")]
    [model] = [s for s in stages(dockerfile) if s[0][1] == "kserve AS kserve-model"]
    assert [args.split()[-1] for args in values(model, "COPY")] == [f"{C.DEPLOY_MODEL_STORE}/"]


def test_the_build_context_holds_only_what_the_image_copies():
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*" and rules[-1] == "**/__pycache__"
    kit = {"!pyproject.toml", "!README.md", "!mnist_model.py", "!mnist_handler.py", "!mnist_kit/"}
    assert set(rules[1:-1]) == {"!deploy/"} | kit  # the entrypoint is mnist_kit/deploy/entrypoint.py


def run_entrypoint(tmp_path, *args) -> list[str]:
    """The image's entrypoint, with a `torchserve` that prints the arguments it was given."""
    fake = tmp_path / "torchserve"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    result = subprocess.run(
        [sys.executable, str(ROOT / "mnist_kit" / "deploy" / "entrypoint.py"), *args],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "MNIST_KIT_HEALTH_PORT": str(free_port())},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def test_the_entrypoint_keeps_kserves_torchserve_in_the_foreground(tmp_path):
    runtime_args = ["--start", f"--model-store={C.DEPLOY_MODEL_STORE}", f"--ts-config={C.DEPLOY_CONFIG}"]
    assert run_entrypoint(tmp_path, "torchserve", *runtime_args) == [*runtime_args, "--foreground"]


def test_the_entrypoint_adds_no_second_foreground(tmp_path):
    assert run_entrypoint(tmp_path, "torchserve", "--start", "--foreground") == ["--start", "--foreground"]


def test_the_entrypoint_runs_any_other_command_as_given(tmp_path):
    assert run_entrypoint(tmp_path, "echo", "hello") == ["hello"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["torchserve"]


def test_compose_serves_an_exported_layout_as_the_image_would(compose):
    """compose.yaml against the kit's constants: the image export names, user 1000 without capabilities, the
    layout mounted read-only, inference and metrics published on loopback by default, restarts and health."""
    assert compose["image"] == export.default_image()
    assert compose["user"] == str(C.SERVING_USER) and compose["cap_drop"] == ["ALL"]
    [volume] = compose["volumes"]
    assert volume.endswith(f":{C.MODEL_MOUNT}:ro") and "./deploy/" in volume
    published = [port.replace("${MNIST_KIT_BIND:-127.0.0.1}", "127.0.0.1") for port in compose["ports"]]
    assert published == [
        f"127.0.0.1:{C.INFERENCE_PORT}:{C.INFERENCE_PORT}",
        f"127.0.0.1:{C.METRICS_PORT}:{C.METRICS_PORT}",
    ]
    assert compose["restart"] == "unless-stopped"
    assert compose["stop_grace_period"] == f"{C.TERMINATION_GRACE_S}s"  # above the drain: a stop loses nothing
    assert f"http://127.0.0.1:{C.INFERENCE_PORT}/ping" in " ".join(compose["healthcheck"]["test"])


class FakeTorchServe(BaseHTTPRequestHandler):
    """/ping Healthy; the management API behind a token, as in the production profile."""

    def do_GET(self):
        status, body = (200, b'{"status": "Healthy"}') if self.path == "/ping" else (401, b'{"code": 401}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_entrypoints_readiness_trusts_ping_where_the_management_api_wants_a_token(monkeypatch):
    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), FakeTorchServe)) as fake:
        url = f"http://127.0.0.1:{fake.server_address[1]}"
        monkeypatch.setattr(entrypoint, "PING_URL", f"{url}/ping")
        monkeypatch.setattr(entrypoint, "MANAGEMENT_URL", url)
        replica = entrypoint.Replica(["torchserve"])
        assert replica.ready() == (200, {"status": "Healthy"})
        replica.draining.set()
        assert replica.ready() == (503, {"status": "Draining"})


def test_the_entrypoint_says_when_it_had_to_kill_torchserve_to_stop_it(monkeypatch):
    """What run() turns into exit 137 instead of 0: a stop that was not clean is not reported as one."""
    monkeypatch.setattr(entrypoint, "STOP_TIMEOUT_S", 0.5)
    ignores_sigterm = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    )
    stubborn = subprocess.Popen([sys.executable, "-c", ignores_sigterm], start_new_session=True, stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is in place
    assert entrypoint.stop_group(stubborn) is True and stubborn.returncode == -signal.SIGKILL
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    assert entrypoint.stop_group(polite) is False and polite.returncode == -signal.SIGTERM


def test_deployings_image_table_is_what_image_measure_wrote():
    from mnist_kit.deploy import image

    report = json.loads((ROOT / "docs" / "containers" / "amd-epyc-avx512.json").read_text())
    docs = (ROOT / "docs" / "DEPLOYING.md").read_text()
    assert "<!-- image-table: docs/containers/amd-epyc-avx512.json -->\n" + image.markdown(report) + "\n" in docs


def test_image_build_without_a_container_engine_says_how_to_get_one(tmp_path):
    from click.testing import CliRunner

    from mnist_kit.cli import cli

    result = CliRunner().invoke(cli, ["image", "build", "--target", "kserve"], env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    assert "podman or docker is not installed" in result.output and "apt-get install podman runc" in result.output


def test_image_build_names_the_dockerfiles_targets_when_given_another():
    from mnist_kit.deploy import image

    with pytest.raises(image.ImageError, match="unknown target web: the Dockerfile's are runtime, model, kserve"):
        image.build(["web"], tool="podman", context=ROOT, model_store=ROOT, logs=ROOT)


# A container engine that records what it is asked and finds every image (the base, the built one: 1 MB).
FAKE_ENGINE = """#!{python}
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["image", "inspect"]:
    print(json.dumps([{{"Size": 1000000}}]))
"""


@pytest.mark.parametrize("repository", [None, "localhost/mnist-kit-test"])
def test_image_build_tags_a_target_as_the_kit_names_it_or_in_the_repository_it_is_given_alone(tmp_path, repository):
    from mnist_kit.deploy import image

    engine, log = tmp_path / "engine", tmp_path / "engine.log"
    engine.write_text(FAKE_ENGINE.format(python=sys.executable, log=str(log)))
    engine.chmod(0o755)
    [built] = image.build(
        ["kserve"], tool=str(engine), context=tmp_path, model_store=tmp_path, logs=tmp_path, repository=repository
    )
    [build] = [line for line in map(json.loads, log.read_text().splitlines()) if line[0] == "build"]
    tagged = [build[i + 1] for i, arg in enumerate(build) if arg == "-t"]
    kits = ["localhost/mnist-kit:kserve", export.default_image("-kserve")]
    assert built.tags == tagged == ([f"{repository}:kserve"] if repository else kits)


def test_every_dockerfile_target_is_one_image_build_knows(dockerfile):
    from mnist_kit.deploy import image

    named = {s[0][1].split(" AS ")[1] for s in stages(dockerfile) if " AS " in s[0][1]}
    assert named == set(image.TARGETS) | {"python"}
