"""The kserve image built and run by a real container engine (podman, or docker): what only a container shows. It
serves as the exports run it, as user 1000 on a read-only root filesystem; a stop under load loses nothing; a killed
container comes back by the engine's restart policy; `podman kube play` runs the kserve runtime's Kubernetes export.

The image is built from a copy of the checkout in a temporary folder (`mnist-kit image build`'s code), so the tests
write nothing into the checkout, and tagged in a repository of the tests' own (TEST_REPOSITORY), so they leave a
user's images (localhost/mnist-kit:*, mnist-kit-serving:*) as they are; the tags they made are removed after. Outside
CI, a machine without a container engine, or not root, skips them.
"""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from mnist_kit import constants as C
from mnist_kit.deploy import image
from mnist_kit.deploy.export import export_k8s
from mnist_kit.deploy.rollout import Load
from mnist_kit.serving import client, processes

# What the Dockerfile's build context holds (.dockerignore lets in nothing else).
CONTEXT = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "mnist_model.py",
    "mnist_handler.py",
    "mnist_kit",
]
MAX_IMAGE_MB = 1000
# Where the tests tag the images they build: never the kit's own names, which a user's images carry.
TEST_REPOSITORY = "localhost/mnist-kit-test"


def engine_or_skip() -> str:
    try:
        tool = image.engine()
    except image.ImageError as e:
        reason = str(e)
    else:
        if tool != "podman" or os.geteuid() == 0:
            return tool
        reason = "the container tests run podman as root (scripts/setup.sh configures it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def build_context(tmp_path_factory) -> Path:
    """A copy of what the Dockerfile reads, where the model targets' layout can be written."""
    context = tmp_path_factory.mktemp("image-context")
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    return context


@pytest.fixture(scope="session")
def kserve_image(build_context, model_store, tmp_path_factory):
    """(engine, tag) of the kserve image, built with the kserve-model one for this session (the engine's layer cache
    makes a rebuild of an unchanged checkout take seconds); the tags that were not there before are removed after,
    the cached layers kept."""
    tool = engine_or_skip()
    logs = tmp_path_factory.mktemp("image-logs")
    targets = ["kserve", "kserve-model"]
    made = [f"{TEST_REPOSITORY}:{t}" for t in targets if not image.image_exists(tool, f"{TEST_REPOSITORY}:{t}")]
    try:
        built = image.build(
            targets,
            tool=tool,
            context=build_context,
            model_store=model_store,
            logs=logs,
            ca_bundle=ca_bundle(),
            repository=TEST_REPOSITORY,
        )
        assert [b.tags for b in built] == [[f"{TEST_REPOSITORY}:{t}"] for t in targets]
        yield tool, built[0].tags[0]
    finally:
        if made:
            subprocess.run([tool, "rmi", "--no-prune", *made], capture_output=True)


def ca_bundle() -> str | None:
    """The CA bundle the host's pip trusts ($PIP_CERT, else the system's), which pip inside the build needs where a
    proxy re-signs PyPI's certificates; passed as a build secret, it is in no layer."""
    for path in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if path and Path(path).is_file():
            return path
    return None


class Container:
    """One container of the image, on free loopback ports, the model store mounted read-only; always removed."""

    def __init__(self, tool: str, tag: str, store: Path, *extra: str):
        self.tool, self.name = tool, f"mnist-kit-test-{os.getpid()}-{time.monotonic_ns()}"
        self.port = processes.free_port()
        self.url = f"http://{C.HOST}:{self.port}"
        line = [tool, "run", "-d", "--name", self.name, "-p", f"{C.HOST}:{self.port}:{C.INFERENCE_PORT}"]
        line += ["-v", f"{store}:{C.DEPLOY_MODEL_STORE}:ro", *extra, tag]
        self.started = time.monotonic()
        try:
            subprocess.run(line, check=True, capture_output=True)
        except subprocess.CalledProcessError:
            self.remove()  # created but not started: nothing left behind
            raise

    def first_answer_s(self, data: bytes, timeout: float = 60) -> float:
        """Seconds from `run` to the first prediction."""
        client.predict(data, url=self.url, wait=timeout)
        return time.monotonic() - self.started

    def inspect(self, template: str) -> str:
        return subprocess.run(
            [self.tool, "inspect", self.name, "--format", template], check=True, capture_output=True, text=True
        ).stdout.strip()

    def remove(self) -> None:
        subprocess.run([self.tool, "rm", "-f", "-t", "0", self.name], capture_output=True)


@pytest.fixture
def store(model_store, tmp_path) -> Path:
    """The model store as the container's user 1000 reads it."""
    copy = tmp_path / "model-store"
    copy.mkdir()
    shutil.copy(model_store / "mnist.mar", copy / "mnist.mar")
    os.chmod(tmp_path, 0o755)
    return copy


@pytest.fixture
def container(kserve_image, store):
    tool, tag = kserve_image
    running = Container(tool, tag, store, "--read-only", "--tmpfs", "/tmp")
    yield running
    running.remove()


def load(url: str, seconds: float) -> dict:
    """32 clients sending the sample 7 for `seconds` with the kit's client, retrying (rollout.Load): how many were
    answered right, answered wrong, failed, and retried."""
    running = Load(url, (ROOT / "examples" / "digits" / "7.png").read_bytes(), concurrency=32, retries=10).start()
    time.sleep(seconds)
    results = running.stop()
    return {
        "answered": sum(r.ok and r.digit == 7 for r in results),
        "wrong": sum(r.ok and r.digit != 7 for r in results),
        "failed": sum(not r.ok for r in results),
        "retried": sum(r.retries > 0 for r in results),
    }


def test_the_container_reads_the_sample_digits_on_a_read_only_root_filesystem(container, digits):
    assert container.first_answer_s(digits[0].read_bytes()) < 60
    for path in digits:
        assert client.predict(path.read_bytes(), url=container.url)["digit"] == int(path.stem)
    described = client.described(container.url, C.MODEL_NAME)[1]
    assert described["serving_form"].startswith("onnx-") and described["torch"] is None


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b"garbage", "image/png", 400, "not a decodable image"),
        (b"", "image/png", 400, "empty request"),
        (b'{"inputs": [' * 5000, "application/json", 400, "the JSON body is nested deeper than"),
    ],
    ids=["undecodable", "empty", "deeply-nested-json"],
)
def test_bad_input_gets_its_4xx_from_the_container(container, digits, body, content_type, status, message):
    container.first_answer_s(digits[0].read_bytes())
    with pytest.raises(client.ClientError) as refused:
        client.request(f"{container.url}/predictions/mnist", body, headers={"Content-Type": content_type})
    assert refused.value.status == status and message in str(refused.value)


def test_the_image_runs_as_user_1000_without_torch_build_tools_or_caches(kserve_image):
    tool, tag = kserve_image
    script = (
        "id -u; python -c 'import importlib.util as u; print(u.find_spec(\"torch\") is None)'; "
        "for t in gcc cc make; do command -v $t; done; "
        "ls /var/lib/apt/lists /root/.cache /home/model-server/.cache 2>/dev/null | grep -v '^partial$' | grep -v ':$'"
    )
    out = subprocess.run([tool, "run", "--rm", tag, "sh", "-c", script], capture_output=True, text=True).stdout
    assert out.split() == [str(C.SERVING_USER), "True"]
    assert image.size_mb(tool, tag) <= MAX_IMAGE_MB


def test_a_stop_under_load_answers_everything_in_flight_and_exits_0_within_the_grace_period(container, digits):
    container.first_answer_s(digits[0].read_bytes())
    counts = {}
    loader = threading.Thread(target=lambda: counts.update(load(container.url, seconds=4)))
    loader.start()
    time.sleep(1)
    start = time.monotonic()
    subprocess.run([container.tool, "stop", "-t", "45", container.name], check=True, capture_output=True)
    stopped_s = time.monotonic() - start
    loader.join()
    assert counts["answered"] > 0 and counts["failed"] == counts["wrong"] == 0, counts
    assert container.inspect("{{.State.ExitCode}}") == "0" and stopped_s < 45


def test_a_killed_container_is_restarted_by_its_policy_and_the_clients_retries_lose_nothing(
    kserve_image, store, digits
):
    tool, tag = kserve_image
    container = Container(tool, tag, store, "--restart", "on-failure", "--read-only", "--tmpfs", "/tmp")
    try:
        container.first_answer_s(digits[0].read_bytes())
        counts = {}
        loader = threading.Thread(target=lambda: counts.update(load(container.url, seconds=8)))
        loader.start()
        time.sleep(2)
        os.kill(int(container.inspect("{{.State.Pid}}")), 9)  # as a crash: `podman kill` would not be restarted
        loader.join()
        assert counts["failed"] == counts["wrong"] == 0 and counts["retried"] > 0, counts
        assert container.inspect("{{.RestartCount}}") == "1"
    finally:
        container.remove()


def kube_play_or_skip(tool: str) -> None:
    """`podman kube play` runs a Kubernetes export on one machine; docker has nothing like it, and image.engine()
    builds with docker only where podman is not installed."""
    if tool != "podman":
        pytest.skip("podman is not installed (the images were built with docker, which has no `kube play`)")
    if subprocess.run([tool, "kube", "play", "--help"], capture_output=True).returncode != 0:
        pytest.skip(f"{image.engine_version(tool)} has no `kube play` (podman 4 and later have)")


def test_kube_play_runs_the_kserve_runtimes_kubernetes_export_and_it_answers(
    kserve_image, model_store, tmp_path, digits
):
    """The export as written, its image the kserve-model target as the tests tag it. podman 4's kube play publishes
    the Deployment's container ports on the host (8080 and 8081, every interface): they must be free."""
    tool, _ = kserve_image
    kube_play_or_skip(tool)
    for port in (C.INFERENCE_PORT, C.KSERVE_GRPC_PORT):
        processes.check_port_free("0.0.0.0", port, "kube play's", config_path="the export")
    export = export_k8s(
        tmp_path / "k8s",
        model_store,
        tmp_path / "no-bench.json",
        image=f"{TEST_REPOSITORY}:kserve-model",
        runtime="kserve",
        cpus=1,
    )
    manifest = export.out / "kubernetes.yaml"
    try:
        play = subprocess.run([tool, "kube", "play", str(manifest)], capture_output=True, text=True)
        assert play.returncode == 0, play.stderr
        url = f"http://{C.HOST}:{C.INFERENCE_PORT}"
        assert client.predict(digits[7].read_bytes(), url=url, wait=60)["digit"] == 7
        assert client.described(url, C.MODEL_NAME)[1]["torch"] is None
    finally:
        subprocess.run([tool, "kube", "down", str(manifest)], capture_output=True)
