"""The MNIST data set: the four official IDX files, read into tensors and checked against the published MD5s."""

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from mnist_kit import constants as C
from mnist_kit.errors import DataError
from mnist_kit.paths import home

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
    """Fetch the files with torchvision; quietly does nothing when offline (the read then explains)."""
    import socket

    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            MNIST(tmp, download=True)
            data_dir.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                if _find(data_dir, name) is None:
                    shutil.move(str(Path(tmp, "MNIST", "raw", name)), data_dir / name)
    except Exception:
        pass
    finally:
        socket.setdefaulttimeout(previous)
