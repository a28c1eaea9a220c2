"""Building the kit's images with whichever container engine is installed (`mnist-kit image build`).

Each Dockerfile target is tagged `localhost/mnist-kit:TARGET`, and as the exports name it (`mnist-kit-serving:0.1.0`,
`-model`, `-kserve`, `-kserve-model`), so `podman kube play` on an export finds it. The `model` targets copy an
export's layout: the command writes one from the current model store first. The base is the official Python image
where a registry answers; where none does, a plain Debian 12 made by debootstrap (root, Debian's package), imported
once as BASE_IMAGE. pip inside the build reads the host's CA bundle ($PIP_CERT) as a build secret, never a layer.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError

TARGETS = ("runtime", "model", "kserve", "kserve-model")
# The targets that bake an export's model store in, and the runtime each export writes it for.
BAKED = {"model": "torchserve", "kserve-model": "kserve"}
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
BASE_IMAGE = "localhost/mnist-kit-base:bookworm"
REGISTRY_PROBE = "https://registry-1.docker.io/v2/"
# Where the command writes the layout the `model` targets copy: under deploy/, the export folder the build sees.
LAYOUT = "deploy/image"


class ImageError(KitError):
    """An image cannot be built here; the message says why and what to do."""


@dataclass(frozen=True)
class Built:
    target: str
    tags: list[str]
    size_mb: float
    seconds: float


def engine(name: str | None = None) -> str:
    """The container engine to build with: `name`, else podman, else docker; a clear error where none is installed."""
    for candidate in [name] if name else ["podman", "docker"]:
        if shutil.which(candidate):
            return candidate
    wanted = name or "podman or docker"
    raise ImageError(
        f"{wanted} is not installed: install a container engine (Debian, as root: apt-get install podman runc; "
        "scripts/setup.sh does, with the settings this host needs)"
    )


def engine_version(tool: str) -> str:
    """`podman version 4.3.1`, as the engine says it."""
    return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()


def registry_answers(timeout: float = 5) -> bool:
    """Whether Docker Hub's registry answers at all (a 401 asking for a token is an answer)."""
    try:
        urllib.request.urlopen(REGISTRY_PROBE, timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def image_exists(tool: str, name: str) -> bool:
    return subprocess.run([tool, "image", "inspect", name], capture_output=True).returncode == 0


def base(tool: str, *, logs: Path, log) -> str:
    """The base image to build on: the official one where it is here or a registry answers, else BASE_IMAGE, made
    with debootstrap the first time."""
    if image_exists(tool, OFFICIAL_BASE) or registry_answers():
        return OFFICIAL_BASE
    if image_exists(tool, BASE_IMAGE):
        log(f"no container registry answers: building on {BASE_IMAGE} (Debian 12, made earlier by debootstrap)")
        return BASE_IMAGE
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        raise ImageError(
            "no container registry answers, and a Debian base can only be made here as root with debootstrap "
            "(apt-get install debootstrap): run as root, or pull python:3.11-slim-bookworm where a registry answers"
        )
    log(f"no container registry answers: making {BASE_IMAGE} with debootstrap (Debian 12 minbase, about a minute)")
    with tempfile.TemporaryDirectory(prefix="mnist-kit-debootstrap-") as root:
        run(
            ["debootstrap", "--variant=minbase", "bookworm", root],
            what="debootstrap",
            log_file=logs / "debootstrap.log",
        )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([tool, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"importing the Debian base failed: {imported.stderr.strip()[-500:]}")
    return BASE_IMAGE


def write_layout(context: Path, model_store: Path) -> str:
    """The layout the `model` targets copy, exported from model_store into context/LAYOUT (replaced)."""
    from mnist_kit.deploy.export import export_k8s

    export_k8s(context / LAYOUT, model_store, force=True)
    return LAYOUT


def build(
    targets=TARGETS,
    *,
    tool: str,
    context: Path,
    model_store: Path,
    logs: Path,
    ca_bundle: str | None = None,
    repository: str | None = None,
    log=lambda message: None,
) -> list[Built]:
    """Build `targets` in the Dockerfile's order and tag each; return what was built, with sizes and times. Each
    build's output goes to logs/image-TARGET.log. Each is tagged localhost/mnist-kit:TARGET and as the exports name
    it, or, given a `repository`, REPOSITORY:TARGET alone (the tests' own, which leave a user's images as they are)."""
    from mnist_kit.deploy.export import default_image

    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ImageError(f"unknown target {', '.join(unknown)}: the Dockerfile's are {', '.join(TARGETS)}")
    args = ["--build-arg", f"BASE={base(tool, logs=logs, log=log)}"]
    if any(t in BAKED for t in targets):
        args += ["--build-arg", f"LAYOUT={write_layout(context, model_store)}"]
    if ca_bundle:
        args += ["--secret", f"id=ca,src={ca_bundle}"]
    built = []
    for target in [t for t in TARGETS if t in targets]:
        if repository:
            tags = [f"{repository}:{target}"]
        else:
            tags = [f"localhost/{C.IMAGE_REPOSITORY}:{target}", default_image(TAG_SUFFIXES[target])]
        log(f"building {target} with {tool} (its output: {logs / f'image-{target}.log'})")
        start = time.monotonic()
        line = [tool, "build", "--target", target, *args, *(a for tag in tags for a in ("-t", tag)), str(context)]
        if tool == "podman":
            line[2:2] = ["--format", "docker"]  # OCI images drop HEALTHCHECK
        run(line, what=f"building {target}", log_file=logs / f"image-{target}.log")
        built.append(Built(target, tags, size_mb(tool, tags[0]), round(time.monotonic() - start, 1)))
    return built


# The export's image name for each target (mnist_kit.deploy.export.default_image's suffixes).
TAG_SUFFIXES = {"runtime": "", "model": "-model", "kserve": "-kserve", "kserve-model": "-kserve-model"}


def size_mb(tool: str, tag: str) -> float:
    """The image's size in MB (10^6 bytes), as `podman images` shows it."""
    out = subprocess.run([tool, "image", "inspect", tag], capture_output=True, text=True, check=True).stdout
    return round(json.loads(out)[0]["Size"] / 1e6, 1)


def run(line: list[str], *, what: str, log_file: Path) -> None:
    """A build step, its output in log_file; where it fails, the error names the file and quotes its last line."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        code = subprocess.run(line, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        lines = log_file.read_text(errors="replace").strip().splitlines()
        raise ImageError(f"{what} failed (exit {code}): {lines[-1] if lines else 'no output'} (whole log: {log_file})")


def measure(tool: str, layout: Path, *, sample: bytes, log=lambda message: None) -> dict:
    """For each of the kit's images present: its size, and for two runs in turn (the first may read the image from
    disk, the second finds it in the page cache) the seconds from `run` to the first answer and the resident memory
    of the container's processes then (RSS summed: pages they share count once per process). Each run mounts the
    layout as the exports do (baked into the model targets), the kserve ones on a read-only root."""
    results = {}
    for target in TARGETS:
        tag = f"localhost/{C.IMAGE_REPOSITORY}:{target}"
        if not image_exists(tool, tag):
            continue
        line = ["-v", f"{layout}:{C.MODEL_MOUNT}:ro"] if target in ("runtime", "kserve") else []
        line += ["--read-only", "--tmpfs", "/tmp"] if target.startswith("kserve") else []
        log(f"measuring {target}")
        runs = [one_run(tool, tag, line, sample=sample) for _ in range(2)]
        results[target] = {"size_mb": size_mb(tool, tag), "runs": runs}
    return results


def one_run(tool: str, tag: str, options: list[str], *, sample: bytes) -> dict:
    """Start a container of `tag`, time its first answer, read its processes' memory, remove it."""
    from mnist_kit.serving import client
    from mnist_kit.serving.processes import free_port

    port, name = free_port(), f"mnist-kit-measure-{time.monotonic_ns()}"
    start = time.monotonic()
    try:  # removed whatever happens, also a container created but not started
        subprocess.run(
            [tool, "run", "-d", "--name", name, "-p", f"{C.HOST}:{port}:{C.INFERENCE_PORT}", *options, tag],
            check=True,
            capture_output=True,
        )
        client.predict(sample, url=f"http://{C.HOST}:{port}", wait=120)
        first_answer_s = round(time.monotonic() - start, 2)
        status = subprocess.run(
            [tool, "exec", name, "sh", "-c", "cat /proc/[0-9]*/status"], capture_output=True, text=True, check=True
        ).stdout
        rss_kib = sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    finally:
        subprocess.run([tool, "rm", "-f", "-t", "0", name], capture_output=True)
    return {"first_answer_s": first_answer_s, "rss_mib": round(rss_kib / 1024)}


def markdown(report: dict) -> str:
    """The table of docs/DEPLOYING.md, from measure()'s report."""
    lines = [
        "| target | image size | `run` to the first answer: first run, second | resident memory then (RSS, summed) |",
        "|---|---:|---:|---:|",
    ]
    for target, r in report["images"].items():
        first, second = r["runs"]
        lines.append(
            f"| `{target}` | {r['size_mb']:.0f} MB | {first['first_answer_s']:.2f} s, {second['first_answer_s']:.2f} s "
            f"| {first['rss_mib']} MiB, {second['rss_mib']} MiB |"
        )
    return "\n".join(lines)
