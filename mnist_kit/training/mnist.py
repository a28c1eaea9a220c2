"""The MNIST data set: the four official IDX files, read into tensors and checked against the published MD5s."""

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from mnist_kit import constants as C
from mnist_kit.errors import DataError
from mnist_kit.paths import home
from mnist_kit.worker.preprocess import NORMALIZED

# Where `mnist-kit train` downloads missing files from: the mirrors torchvision's MNIST dataset reads, in its order.
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# MD5 of the decompressed files, as published with the data set.
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def default_data_dir() -> Path:
    return Path(os.environ.get(C.DATA_DIR_ENV) or home() / C.DATA_DIR)


def load(data_dir, split: str = "train", download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 N×28×28, labels int64 N) of the "train" or "test" split."""
    data_dir = Path(data_dir)
    prefix = "train" if split == "train" else "t10k"
    if download and any(_find(data_dir, name) is None for name in FILES):
        _download(data_dir)
    images = _read_idx(data_dir, f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(data_dir, f"{prefix}-labels-idx1-ubyte")
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} images but {len(labels)} labels in the {split} split")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def normalize_tensor(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 → float32 N×1×28×28, normalised by the serving preprocessing's own table (NORMALIZED)."""
    return torch.from_numpy(NORMALIZED)[images.long()].unsqueeze(1)


def _find(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(data_dir: Path, name: str) -> np.ndarray:
    path = _find(data_dir, name)
    if path is None:
        raise DataError(
            f"MNIST file {name}(.gz) not found in {data_dir}/ and it could not be downloaded: "
            f"put the four files ({', '.join(FILES)}, raw or .gz) there, or point {C.DATA_DIR_ENV} "
            "or --data-dir at the folder that holds them"
        )
    try:
        raw = bytearray(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is corrupt: {e}") from None
    if hashlib.md5(raw).hexdigest() != FILES[name]:
        raise DataError(f"{path} is corrupt: its MD5 is not the published {FILES[name]}; download it again")
    _, dtype, ndim = struct.unpack(">HBB", raw[:4])
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _download(data_dir: Path) -> None:
    """Fetch the missing files from the mirrors torchvision reads. Offline (no mirror answers), it does nothing: the
    read then says where to put the files. A file that cannot be written (a full disk, no permission) is an error
    that says so. Each file is written whole or not at all; its MD5 is checked when it is read."""
    for name in [name for name in FILES if _find(data_dir, name) is None]:
        data = _fetch(f"{name}.gz")
        if data is None:
            return
        try:
            _write_whole(data_dir / f"{name}.gz", data)
        except OSError as e:
            raise DataError(f"downloaded {name}.gz but could not write it to {data_dir}/: {e}") from None


def _write_whole(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: a full disk or a kill leaves no half file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except OSError:
        Path(partial).unlink(missing_ok=True)
        raise


def _fetch(filename: str) -> bytes | None:
    """The file from the first mirror that serves it, or None when none answers (offline)."""
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + filename, timeout=10) as response:
                return response.read()
        except (urllib.error.URLError, OSError):  # offline, refused, timed out, or not on this mirror
            continue
    return None
