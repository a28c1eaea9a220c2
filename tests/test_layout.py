"""The architecture, checked: one package, dependencies one way (CLI → library → worker and model), a worker
side that travels alone in the .mar, and a wheel that installs nothing else at top level."""

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

from mnist_kit.packaging import archive

PACKAGE = ROOT / "mnist_kit"
# What the worker side may import besides the standard library: TorchServe's worker has these, and the .mar.
WORKER_IMPORTS = {"torch", "onnxruntime", "PIL", "numpy", "ts", "captum", "mnist_model", "mnist_kit"}
WORKER_FILES = [
    PACKAGE / "__init__.py",
    PACKAGE / "constants.py",
    *sorted((PACKAGE / "worker").glob("*.py")),
    ROOT / "mnist_handler.py",
    ROOT / "mnist_model.py",
]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports in functions included), or only those its
    module body imports."""
    names = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def kit_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_cli(name: str) -> bool:
    return name == "mnist_kit.cli" or name.startswith("mnist_kit.cli.")


def test_only_the_cli_imports_click():
    users = [name for name, path in kit_modules().items() if any(n.split(".")[0] == "click" for n in imports(path))]
    assert users and all(is_cli(name) for name in users), users


def test_the_library_never_imports_the_cli():
    users = [name for name, path in kit_modules().items() if any(is_cli(n) for n in imports(path))]
    assert [name for name in users if not is_cli(name)] == ["mnist_kit.__main__"]


# The declared order (docs/DEVELOPMENT.md, "The order"), lowest first: a module imports only from its own layer and the
# layers below it. The foundation's modules and the model are what every layer may use.
LAYERS = (
    ("mnist_model", "mnist_kit", "mnist_kit.constants", "mnist_kit.errors", "mnist_kit.paths", "mnist_kit.files"),
    ("mnist_kit.machine", "mnist_kit.percentiles"),
    ("mnist_kit.worker",),
    ("mnist_kit.training",),
    ("mnist_kit.packaging",),
    ("mnist_kit.serving",),
    ("mnist_kit.evaluation",),
    ("mnist_kit.bench",),
    ("mnist_kit.deploy",),
    ("mnist_kit.feedback",),
    ("mnist_kit.ui",),
    ("mnist_kit.cli", "mnist_kit.__main__"),
)
# Inside serving: the runtime-neutral modules below the two runtimes' wings, and neither wing imports the other.
SERVING_WINGS = ("mnist_kit.serving.torchserve", "mnist_kit.serving.kserve")


def layer(name: str) -> int:
    """The layer a module belongs to: the longest prefix of its name that LAYERS lists."""
    found = [(len(unit), i) for i, units in enumerate(LAYERS) for unit in units if f"{name}.".startswith(f"{unit}.")]
    return max(found)[1] if found else -1


def kit_imports() -> dict[str, set[str]]:
    """Each module of the kit (and the model) → the modules of the kit it imports, anywhere in its file."""
    modules = {**kit_modules(), "mnist_model": ROOT / "mnist_model.py"}
    return {name: {n for n in imports(path) if n in modules and n != name} for name, path in modules.items()}


def test_every_module_has_a_place_in_the_declared_order():
    assert [name for name in kit_imports() if layer(name) < 0] == []


def test_no_module_imports_one_above_it_in_the_declared_order():
    upward = [f"{name} → {n}" for name, found in kit_imports().items() for n in found if layer(n) > layer(name)]
    assert upward == []


def test_neither_runtime_wing_imports_the_other():
    crossing = []
    for name, found in kit_imports().items():
        wing = next((w for w in SERVING_WINGS if name.startswith(f"{w}.")), None)
        for n in found:
            other = next((w for w in SERVING_WINGS if n.startswith(f"{w}.")), None)
            if other and other != wing and name.startswith("mnist_kit.serving"):
                crossing.append(f"{name} → {n}")
    assert crossing == []


def test_the_development_guide_names_the_sub_packages_in_the_declared_order():
    guide = (ROOT / "docs" / "DEVELOPMENT.md").read_text().split("## The order", 1)[1].split("\n## ", 1)[0]
    named = [unit.removeprefix("mnist_kit.") for units in LAYERS[2:-1] for unit in units]
    positions = [guide.find(f"`{name}/`") for name in named]
    assert -1 not in positions and positions == sorted(positions), dict(zip(named, positions, strict=True))


def test_the_package_has_no_import_cycles():
    modules = kit_modules()
    graph = {name: {n for n in imports(path) if n in modules and n != name} for name, path in modules.items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            pytest.fail(f"import cycle: {' → '.join(path[path.index(name) :] + [name])}")
        if name not in done:
            path.append(name)
            for dependency in graph[name]:
                visit(dependency)
            path.pop()
            done.add(name)

    for name in graph:
        visit(name)


@pytest.mark.parametrize("path", WORKER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_worker_side_imports_only_what_a_torchserve_worker_has(path):
    allowed = set(sys.stdlib_module_names) | WORKER_IMPORTS
    outside = {n for n in imports(path) if n.split(".")[0] not in allowed}
    kit = {n for n in imports(path) if n.startswith("mnist_kit.")}
    assert not outside
    assert all(n.startswith(("mnist_kit.constants", "mnist_kit.worker")) for n in kit), kit


@pytest.mark.parametrize("path", sorted((PACKAGE / "worker").glob("*.py")), ids=lambda p: p.name)
def test_only_the_eager_forms_import_torch_on_the_worker_side(path):
    """So a server whose form is ONNX imports no torch: the others import it inside the functions that need it."""
    top_level = {n for n in imports(path, top_level_only=True) if n.split(".")[0] == "torch"}
    assert not top_level or path.name == "eager_forms.py"


@pytest.mark.parametrize("path", sorted((PACKAGE / "worker").glob("*.py")), ids=lambda p: p.name)
def test_the_serving_core_imports_no_server(path):
    assert not {n for n in imports(path) if n.split(".")[0] in ("ts", "kserve", "fastapi", "uvicorn")}


def test_the_torchserve_handler_is_an_adapter_over_the_core_alone():
    kit = {n.split(".")[0] for n in imports(ROOT / "mnist_handler.py")} - set(sys.stdlib_module_names)
    assert kit == {"ts", "torch", "mnist_kit"}
    assert {n for n in imports(ROOT / "mnist_handler.py") if n.startswith("mnist_kit")} <= {
        "mnist_kit.worker.core",
        "mnist_kit.worker.core.Core",
    }


def test_library_parameters_past_the_third_are_keyword_only():
    """A swap of two same-typed arguments (cpus and memory, say) must fail, not go unnoticed. Click's commands are
    called with keywords by Click itself."""
    loose = []
    for name, path in kit_modules().items():
        if is_cli(name):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(positional) > 3:
                    loose.append(f"{name}.{node.name}")
    assert not loose


def test_no_module_of_the_kit_is_over_400_lines():
    long = {name: n for name, path in kit_modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_no_module_of_the_kit_shares_its_name_with_a_library():
    """A reader who sees `requests.read(...)` or `import forms` should not have to check which one is meant."""
    libraries = set(sys.stdlib_module_names) | set(importlib.metadata.packages_distributions())
    shadowing = {name for name, path in kit_modules().items() if path.stem in libraries and path.stem != "__init__"}
    assert not shadowing


def test_the_package_inits_import_nothing():
    for init in (PACKAGE / "__init__.py", PACKAGE / "worker" / "__init__.py"):
        assert imports(init) == set(), init


def test_the_archive_carries_the_worker_side_and_nothing_else_of_the_kit(untrained_checkpoint, tmp_path):
    names = set(zipfile.ZipFile(archive.build(untrained_checkpoint, tmp_path, mode="eager")).namelist())
    kit = {n for n in names if n.startswith("mnist_kit/")}
    expected = {"mnist_kit/__init__.py", "mnist_kit/constants.py"} | {
        f"mnist_kit/worker/{p.name}" for p in (PACKAGE / "worker").glob("*.py")
    }
    assert kit == expected
    assert {"mnist_handler.py", "mnist_model.py", "mnist_sd.pt", "model-config.yaml"} <= names


def test_the_archive_alone_is_enough_for_a_worker_without_the_kit_installed(untrained_checkpoint, tmp_path):
    mar = archive.build(untrained_checkpoint, tmp_path, mode="eager")
    model_dir = tmp_path / "model_dir"
    zipfile.ZipFile(mar).extractall(model_dir)
    # A Python that has torch and ts but not mnist-kit: drop the editable install's finder and the checkout.
    code = f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ + str(f)]
sys.path[:] = [{str(model_dir)!r}] + [p for p in sys.path if p not in ("", {str(ROOT)!r}) and "editable" not in p]
import mnist_handler, mnist_kit
assert mnist_kit.__file__.startswith({str(model_dir)!r}), mnist_kit.__file__
assert mnist_handler.__file__.startswith({str(model_dir)!r}), mnist_handler.__file__
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_wheel_installs_mnist_kit_and_the_two_torchserve_files_only(tmp_path):
    # Built from a copy of the project files, so no build/ left from another build can add to it.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "build", "*.egg-info", "__pycache__", "checkpoints", "model_store", "data", "reports", "logs"
        ),
    )
    # pip is a tool here, not the kit: its own deprecations (its vendored pkg_resources) are its maintainers' to fix.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, source],
        check=True,
        capture_output=True,
        env=env,
    )
    [wheel] = tmp_path.glob("mnist_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"mnist_kit", "mnist_model.py", "mnist_handler.py"}
    assert {
        "mnist_kit/samples/7.png",
        "mnist_kit/samples/canvas.png",
        "mnist_kit/samples/photo.jpg",
        "mnist_kit/bench/noop_handler.py",
        "mnist_kit/worker/preprocess.py",
        "mnist_kit/ui/static/index.html",
        "mnist_kit/ui/static/app.js",
        "mnist_kit/ui/static/style.css",
    } <= set(names)
