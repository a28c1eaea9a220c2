"""The .mar format in one place: what an archive says (MAR-INF/MANIFEST.json, model-config.yaml), its files, and
torch-model-archiver, which writes them, for the kit's model and the bench's no-op handler alike."""

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mnist_kit.errors import KitError

MANIFEST = "MAR-INF/MANIFEST.json"
MODEL_CONFIG = "model-config.yaml"


class MarError(KitError):
    """An archive cannot be read or written; the message says why."""


@dataclass(frozen=True)
class Mar:
    """One archive: its manifest's model section and its model-config.yaml ({} when it has none)."""

    path: Path
    model: dict
    config: dict

    @property
    def model_name(self) -> str:
        return self.model["modelName"]

    @property
    def version(self) -> str:
        return self.model["modelVersion"]

    @property
    def serialized_file(self) -> str:
        return self.model["serializedFile"]

    def read(self, name: str) -> bytes:
        """One file of the archive, by its name inside it."""
        with zipfile.ZipFile(self.path) as z:
            return z.read(name)

    def extract(self, folder) -> Path:
        """Every file into `folder`, laid out as TorchServe lays out a worker's model_dir."""
        with zipfile.ZipFile(self.path) as z:
            z.extractall(folder)
        return Path(folder)


def read(path) -> Mar:
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            model = json.loads(z.read(MANIFEST))["model"]
            config = yaml.safe_load(z.read(MODEL_CONFIG)) if MODEL_CONFIG in z.namelist() else {}
        missing = {"modelName", "modelVersion"} - model.keys()
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        return Mar(path, model, config or {})
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise MarError(
            f"{path} is not a TorchServe archive ({type(e).__name__}: {e}): build one with mnist-kit archive"
        ) from None


def package(
    *,
    model_name: str,
    version: str,
    handler,
    export_path,
    serialized_file=None,
    model_file=None,
    extra_files=(),
    config: dict | str | None = None,
) -> Path:
    """Run torch-model-archiver; return export_path/<model_name>.mar (overwritten if there). `config` is the
    model-config.yaml, as a dict or as its text. The archiver stages files in $TMPDIR/<model name>: it gets a private
    one, so two builds never mix their files."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", model_name]
        command += ["--version", version, "--handler", str(handler), "--export-path", str(export_path), "--force"]
        if serialized_file:
            command += ["--serialized-file", str(serialized_file)]
        if model_file:
            command += ["--model-file", str(model_file)]
        if extra_files:
            command += ["--extra-files", ",".join(map(str, extra_files))]
        if config is not None:
            config_file = Path(tmp, MODEL_CONFIG)
            config_file.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
            command += ["--config-file", str(config_file)]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp})
    built = Path(export_path, f"{model_name}.mar")
    if result.returncode != 0 or not built.is_file():
        raise MarError(f"torch-model-archiver failed on {handler}: {(result.stderr or result.stdout).strip()}")
    return built
