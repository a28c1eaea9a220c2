"""Shared fixtures: the MNIST files, a tiny model trained once per session, its archive, and a real TorchServe."""

from pathlib import Path

import pytest

from mnist_kit import archive as mnist_archive
from mnist_kit import data as mnist_data
from mnist_kit import training as train
from mnist_kit.server import TorchServe

ROOT = Path(__file__).resolve().parent.parent
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.png"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = mnist_data.default_data_dir()
    if not (path / "t10k-labels-idx1-ubyte.gz").exists() and not (path / "t10k-labels-idx1-ubyte").exists():
        pytest.fail(f"MNIST files not found in {path}: set MNIST_DATA_DIR (CI uses ../shared/data/mnist)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(data_dir, tmp_path_factory) -> Path:
    """A model trained for seconds: good enough to read the typical sample digits."""
    out = tmp_path_factory.mktemp("tiny") / "mnist_sd.pt"
    train.fit(data_dir, out, epochs=1, limit=12000, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(data_dir, tmp_path_factory) -> Path:
    """The default recipe (`mnist-kit train`), for the accuracy tests: about two and a half minutes."""
    out = tmp_path_factory.mktemp("trained") / "mnist_sd.pt"
    train.fit(data_dir, out, progress=False)
    return out


@pytest.fixture(scope="session")
def model_store(tiny_checkpoint, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    mnist_archive.build(tiny_checkpoint, store)
    return store


@pytest.fixture(scope="session")
def server(model_store):
    """TorchServe on free ports with its own temp dir: stopped at the end of the session, even on failure."""
    with TorchServe(model_store) as ts:
        yield ts


@pytest.fixture(scope="session")
def digits() -> list[Path]:
    assert len(DIGITS) == 10
    return DIGITS
