"""Files the kit writes and the names it gives their contents: a JSON report written whole or not at all, and the
content hash that names an image (feedback.db, the fine-tunes' records) or a checkpoint's weights."""

import hashlib
import json
import os
from pathlib import Path


def write_json(data: dict, path) -> None:
    """Write atomically: a crash mid-write leaves the old file or none, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def sha256(data: bytes) -> str:
    """What names an image file in the store: the hash of its bytes (an exported correction keeps its hash)."""
    return hashlib.sha256(data).hexdigest()
