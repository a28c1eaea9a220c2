"""Shared fixtures, and the test tiers.

Each test gets exactly one tier marker, from the fixtures it uses unless it names one itself:
  slow         the default training recipe (trained_checkpoint): minutes
  integration  a tiny model trained in seconds (tiny_checkpoint), its archive and a server process (RUNTIMES: a
               real TorchServe, the kserve runtime); also the 1 000 held-out real-world images (held_out), most of a
               minute to draw
  container    the kserve image built and run by a real container engine (kserve_image): a few minutes
  unit         everything else: in process, no Java, no training; `scripts/test.sh -m unit`, under a minute

A unit test that reaches a runtime or the training by name at run time (request.getfixturevalue), out of the rule's
sight, fails saying so. Every process the tests start treats deprecations as pytest does (PYTHONWARNINGS).
"""

import os
import shutil
from pathlib import Path

import pytest
from harness import TorchServe

from mnist_kit.evaluation import kinds
from mnist_kit.packaging import archive
from mnist_kit.serving.kserve.launcher import PrivateKServe
from mnist_kit.training import mnist
from mnist_kit.training.fit import Recipe, fit

ROOT = Path(__file__).resolve().parent.parent
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.png"))
TIERS = ("unit", "integration", "slow", "container")
# The default recipe trains for minutes, about ten on a 2-core CPU without native bf16 sharing its cores.
SLOW_TIMEOUT_S = 1800
# The shared fixtures that start a server process (Java TorchServe, the kserve runtime): their tests are integration.
RUNTIMES = {"server", "kserve_runtime"}
# The tier of the test being set up, for the fixtures that refuse the unit tier (out_of_the_unit_tier).
SETTING_UP = {"tier": None}


def pytest_collection_modifyitems(items):
    for item in items:
        named = [m.name for m in item.iter_markers() if m.name in TIERS]
        if len(named) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked {named}: one tier per test")
        if "kserve_image" in item.fixturenames:
            tier = "container"
        elif "trained_checkpoint" in item.fixturenames:
            tier = "slow"
        elif {"tiny_checkpoint", "held_out", *RUNTIMES} & set(item.fixturenames):
            tier = "integration"
        else:
            tier = named[0] if named else "unit"
        if named and named[0] != tier and tier != "unit":
            raise pytest.UsageError(f"{item.nodeid} is marked {named[0]} but its fixtures make it {tier}")
        if not named:
            item.add_marker(tier)
        if tier == "slow":
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    SETTING_UP["tier"] = next((m.name for m in item.iter_markers() if m.name in TIERS), None)


def out_of_the_unit_tier(fixture: str) -> None:
    """Called by the fixtures that train or start a server: a unit test gets there only by name at run time
    (request.getfixturevalue), where the tier rule cannot see it."""
    if SETTING_UP["tier"] == "unit":
        pytest.fail(f"a unit test reached {fixture} at run time: name it among the test's arguments (integration)")


@pytest.fixture(scope="session", autouse=True)
def deprecations_are_errors_in_every_process(pytestconfig):
    """pyproject's filterwarnings for every process the tests start (servers, their workers, the CLI), as
    PYTHONWARNINGS, which children inherit: a deprecation a server meets fails its test as one in pytest does."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONWARNINGS", ",".join(pytestconfig.getini("filterwarnings")))
        yield


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where tests leave what people look at (the README's screenshots, the drawn digits' report): a temporary folder,
    or $MNIST_KIT_TEST_ARTIFACTS (copy ui.png and pad.png from there to docs/ to refresh the README's)."""
    folder = os.environ.get("MNIST_KIT_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST files; tests that need them skip without them, except in CI, where they must be there."""
    path = mnist.default_data_dir()
    if not (path / "t10k-labels-idx1-ubyte.gz").exists() and not (path / "t10k-labels-idx1-ubyte").exists():
        message = f"MNIST files not found in {path}: set MNIST_DATA_DIR (CI uses ../shared/data/mnist)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# Points of test accuracy the tiny model's archives let int8 lose (tiny_checkpoint); the default model's keep 0.05.
TINY_INT8_DROP = 0.5


@pytest.fixture(scope="session")
def tiny_checkpoint(data_dir, tmp_path_factory) -> Path:
    """A model trained for seconds: good enough to read the typical sample digits. Its int8 form loses about 0.1
    points against float, a few images either way by CPU and seed (0.03 to 0.10 seen on EPYCs), around the 0.05
    the archive allows: its archives allow TINY_INT8_DROP instead, so that every test has the int8 form."""
    out_of_the_unit_tier("tiny_checkpoint")
    out = tmp_path_factory.mktemp("tiny") / "mnist_sd.pt"
    fit(Recipe(epochs=1, limit=12000, seed=1), out, data_dir=data_dir)
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(data_dir, tmp_path_factory) -> Path:
    """The default recipe (`mnist-kit train`), for the accuracy tests: minutes (its metrics.json says how many)."""
    out = tmp_path_factory.mktemp("trained") / "mnist_sd.pt"
    fit(Recipe(), out, data_dir=data_dir)
    return out


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """Random weights of the right shape: enough to pack and load an archive without training (unit tier)."""
    import torch

    from mnist_model import MnistClassificationNet

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("untrained") / "mnist_sd.pt"
    torch.save(MnistClassificationNet().state_dict(), out)
    return out


# Held-out real-world images per kind (evaluation/kinds.py), for the accuracy tests and the runtimes' parity.
PER_KIND = 200


@pytest.fixture(scope="session")
def held_out(data_dir) -> list[tuple[str, int | str | None, bytes]]:
    images, labels = mnist.load(data_dir, "test", download=False)
    return kinds.make(images.numpy(), labels.numpy(), per_kind=PER_KIND, seed=0)


@pytest.fixture(scope="session")
def model_store(tiny_checkpoint, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    archive.build(tiny_checkpoint, store, max_accuracy_drop=TINY_INT8_DROP)
    return store


@pytest.fixture(scope="session")
def server(model_store):
    """TorchServe on free ports with its own temp dir, shared by the tests that leave its state as they found it;
    stopped at the end of the session, even on failure."""
    out_of_the_unit_tier("server")
    with TorchServe(model_store) as ts:
        yield ts


@pytest.fixture(scope="session")
def kserve_runtime(model_store):
    """The kit's kserve runtime serving the same archive as `server`, shared like it."""
    out_of_the_unit_tier("kserve_runtime")
    with PrivateKServe(model_store / "mnist.mar") as ks:
        yield ks


@pytest.fixture(scope="session")
def digits() -> list[Path]:
    assert len(DIGITS) == 10
    return DIGITS


@pytest.fixture(scope="session")
def trained_server(trained_checkpoint, data_dir, tmp_path_factory):
    """TorchServe with the default recipe's model, archived as `mnist-kit archive` does: what a person draws on."""
    store = tmp_path_factory.mktemp("trained_store")
    archive.build(trained_checkpoint, store, data_dir=data_dir)
    with TorchServe(store) as ts:
        yield ts


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, which Playwright drives (its own browser download cannot work here); in CI a missing
    browser fails the tests that need it, elsewhere they skip saying why."""
    path = Path(shutil.which("chromium") or "/usr/bin/chromium")
    if not path.exists():
        message = "chromium not found: scripts/setup.sh installs it (as root: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless chromium driven by Playwright, for the pads' pages (test_ui.py, test_review.py); one a module, closed
    with it: Playwright's sync API keeps an event loop running on this thread while it is open, where asyncio.run
    cannot start another (the in-process serving tests use it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        yield browser
        browser.close()
