"""The MNIST files: loaded raw or gzipped, checked by MD5, and a clear word when they are missing or broken."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from mnist_kit.training import mnist


def raw_bytes(data_dir, name) -> bytes:
    gz = data_dir / f"{name}.gz"
    return gzip.decompress(gz.read_bytes()) if gz.exists() else (data_dir / name).read_bytes()


def test_test_split_loads_as_uint8_images_and_labels(data_dir):
    images, labels = mnist.load(data_dir, "test", download=False)
    assert images.shape == (10000, 28, 28) and str(images.dtype) == "torch.uint8"
    assert labels.shape == (10000,) and set(labels.tolist()) == set(range(10))


def test_raw_and_gzipped_files_load_alike(data_dir, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw_bytes(data_dir, "t10k-images-idx3-ubyte"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw_bytes(data_dir, "t10k-labels-idx1-ubyte")))
    images, labels = mnist.load(tmp_path, "test", download=False)
    expected_images, expected_labels = mnist.load(data_dir, "test", download=False)
    assert images.equal(expected_images) and labels.equal(expected_labels)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(mnist.DataError, match=f"not found in {tmp_path}.*MNIST_DATA_DIR"):
        mnist.load(tmp_path, "test", download=False)


def test_a_corrupt_file_is_caught_by_its_md5(data_dir, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw_bytes(data_dir, "t10k-images-idx3-ubyte"))
    labels = bytearray(raw_bytes(data_dir, "t10k-labels-idx1-ubyte"))
    labels[100] ^= 1
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(mnist.DataError, match="t10k-labels-idx1-ubyte is corrupt: its MD5"):
        mnist.load(tmp_path, "test", download=False)


def test_a_truncated_gzip_is_a_clear_error(data_dir, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw_bytes(data_dir, "t10k-images-idx3-ubyte"))
    truncated = gzip.compress(raw_bytes(data_dir, "t10k-labels-idx1-ubyte"))[:500]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(truncated)
    with pytest.raises(mnist.DataError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        mnist.load(tmp_path, "test", download=False)


def gzipped_bytes(data_dir, name) -> bytes:
    """The file as a mirror serves it: the .gz as it is where there is one (compressing the training images takes
    seconds)."""
    gz = data_dir / f"{name}.gz"
    return gz.read_bytes() if gz.exists() else gzip.compress((data_dir / name).read_bytes(), compresslevel=1)


def test_a_download_writes_each_missing_file_whole_and_the_read_checks_it(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", lambda filename: gzipped_bytes(data_dir, filename[:-3]))
    images, labels = mnist.load(tmp_path, "test")
    assert len(images) == len(labels) == 10000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.gz" for name in mnist.FILES)


def test_offline_the_download_writes_nothing_and_the_read_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", lambda filename: None)
    with pytest.raises(mnist.DataError, match="could not be downloaded: put the four files"):
        mnist.load(tmp_path, "test")
    assert list(tmp_path.iterdir()) == []


def test_a_downloaded_file_that_cannot_be_written_is_reported_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", lambda filename: b"data")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(
        mnist.DataError, match=f"downloaded .*.gz but could not write it to {blocked}/mnist/: .*Not a directory"
    ):
        mnist.load(blocked / "mnist", "test")


NEEDS_THE_FILES = "tests/test_data.py::test_test_split_loads_as_uint8_images_and_labels"


@pytest.fixture(scope="module")
def without_the_files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the empty folder, {CI: pytest's output}): a test that needs the files run with MNIST_DATA_DIR pointing at an
    empty folder, outside CI ("") and in it ("1"); both runs at once, since each spends its seconds importing torch."""
    empty = tmp_path_factory.mktemp("no-mnist")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", NEEDS_THE_FILES]
    runs = {
        ci: subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "MNIST_DATA_DIR": str(empty), "CI": ci},
            stdout=subprocess.PIPE,
            text=True,
        )
        for ci in ("", "1")
    }
    return empty, {ci: run.communicate()[0] for ci, run in runs.items()}


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("1", "1 error")])
def test_without_the_files_tests_skip_saying_why_except_in_ci(without_the_files, ci, outcome):
    empty, output = without_the_files
    assert outcome in output[ci] and f"MNIST files not found in {empty}: set MNIST_DATA_DIR" in output[ci]
