"""The kit's home: the folder its default paths (checkpoints/, model_store/, config.properties, ...) are relative to."""

import os
from pathlib import Path

from mnist_kit import constants as C

CHECKOUT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """$MNIST_KIT_HOME; else the source checkout the kit runs from (scripts/setup.sh installs it editable);
    else the current directory. So `mnist-kit` works from any directory."""
    if os.environ.get(C.HOME_ENV):
        return Path(os.environ[C.HOME_ENV])
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / C.TS_CONFIG).is_file():
        return CHECKOUT
    return Path.cwd()
