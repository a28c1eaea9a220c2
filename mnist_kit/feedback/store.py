"""Corrections from the pads, kept on this machine: the exact image that was sent, the answer it got (digit,
confidence, model version, serving form), the digit it really is, and when, in an SQLite database in the kit's home
(`feedback.db`, standard library `sqlite3`).

Each correction is one transaction in a write-ahead log, so a process killed mid-write leaves the database as it
was before that correction or after it, never with half a row. The schema's version is SQLite's `user_version`;
a database from a newer kit is refused rather than misread.
"""

import csv
import hashlib
import io
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mnist_kit import constants as C
from mnist_kit.errors import KitError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    image BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    answered INTEGER CHECK (answered BETWEEN 0 AND 9),
    confidence REAL,
    model_version TEXT,
    serving_form TEXT
);
CREATE INDEX feedback_label ON feedback (label);
"""
TEXT_LIMIT = 64  # characters of a model version or serving form


class FeedbackError(KitError):
    """A correction the kit will not store, or a database it cannot use; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Correction:
    id: int
    created: float
    label: int
    image: bytes
    answered: int | None
    confidence: float | None
    model_version: str | None
    serving_form: str | None

    @property
    def wrong(self) -> bool:
        """The answer it corrects was not its label (a user may also confirm a right answer)."""
        return self.answered is not None and self.answered != self.label


def default_path() -> Path:
    from mnist_kit.paths import home

    return home() / C.FEEDBACK_DB


class Store:
    """`Store(path)`: the database, created or brought to this kit's schema on first use."""

    def __init__(self, path=None):
        self.path = Path(path or default_path())
        self.lock = threading.Lock()  # one connection, shared by the pad server's threads: one at a time
        self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, opened on first use: a pad that stores nothing creates no database."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise FeedbackError(f"{self.path} has schema {version}, newer than this kit's {SCHEMA_VERSION}")
            if version == 0:
                with db:
                    db.executescript(SCHEMA)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db = db
        return self._db

    def add(self, image: bytes, label, answer: dict | None = None) -> int:
        """Store one correction, after checking it: a label 0-9, an image the kit can read, no larger than a
        request may be, and, when given, the answer it corrects. Its id."""
        label = check_label(label)
        check_image(image)
        answered, confidence, version, form = check_answer(answer or {})
        with self.lock, self.db:  # one transaction: the whole row or nothing
            cursor = self.db.execute(
                "INSERT INTO feedback (created, label, image, sha256, answered, confidence, model_version, "
                "serving_form) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), label, image, hashlib.sha256(image).hexdigest(), answered, confidence, version, form),
            )
        return cursor.lastrowid

    def prometheus(self) -> str:
        """The corrections per model version, label and whether they corrected a wrong answer, in Prometheus' text
        format: the share of wrong answers by version and digit, where operators look for drift."""
        lines = [
            "# HELP mnist_kit_feedback_total Corrections stored from the pads, by model version, label and verdict.",
            "# TYPE mnist_kit_feedback_total counter",
        ]
        for version, label, wrong, count in self.counts() if self.path.exists() else []:
            escaped = version.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'mnist_kit_feedback_total{{model_version="{escaped}",label="{label}",wrong="{str(wrong).lower()}"}} '
                f"{count}"
            )
        return "\n".join(lines) + "\n"

    def corrections(self) -> list[Correction]:
        with self.lock:
            rows = self.db.execute(
                "SELECT id, created, label, image, answered, confidence, model_version, serving_form FROM feedback "
                "ORDER BY id"
            ).fetchall()
        return [Correction(*row) for row in rows]

    def stats(self) -> dict:
        """How many corrections, per label, and per model version: how many, and how many of its answers wrong."""
        with self.lock:
            per_label = dict(self.db.execute("SELECT label, COUNT(*) FROM feedback GROUP BY label ORDER BY label"))
            rows = self.db.execute(
                "SELECT model_version, COUNT(*), SUM(answered IS NOT NULL AND answered != label) FROM feedback "
                "GROUP BY model_version ORDER BY model_version"
            ).fetchall()
        versions = {version or "unknown": {"corrections": count, "wrong": wrong} for version, count, wrong in rows}
        total = sum(per_label.values())
        return {"total": total, "per_label": {str(k): v for k, v in per_label.items()}, "per_version": versions}

    def counts(self) -> list[tuple[str, int, bool, int]]:
        """(model version, label, whether the answer was wrong, how many): what /metrics publishes."""
        with self.lock:
            rows = self.db.execute(
                "SELECT COALESCE(model_version, 'unknown'), label, answered IS NOT NULL AND answered != label, "
                "COUNT(*) FROM feedback GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall()
        return [(version, label, bool(wrong), count) for version, label, wrong, count in rows]

    def export(self, folder) -> int:
        """Every correction as the exact file that was sent, named by its label (LABEL-ID.png, .jpg, ...: the layout
        `train --extra` reads), and feedback.csv beside them; how many. Not re-encoded: a phone photo keeps the EXIF
        orientation the serving preprocessing turns it upright by."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        corrections = self.corrections()
        with open(folder / "feedback.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "label", "answered", "confidence", "model_version", "serving_form", "created"])
            for c in corrections:
                name = f"{c.label}-{c.id:06d}{SUFFIXES.get(Image.open(io.BytesIO(c.image)).format, '.png')}"
                (folder / name).write_bytes(c.image)
                writer.writerow([name, c.label, c.answered, c.confidence, c.model_version, c.serving_form, c.created])
        return len(corrections)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def check_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise FeedbackError(f"label must be a digit 0 to 9, not {label!r}")
    return label


def check_image(image: bytes) -> None:
    if not image:
        raise FeedbackError("no image: send the image file the answer was for")
    if len(image) > C.MAX_REQUEST_BYTES:
        raise FeedbackError(
            f"image too large: {len(image):,} bytes, the limit is {C.MAX_REQUEST_BYTES:,} bytes", status=413
        )
    from mnist_kit.worker import preprocess  # numpy and the preprocessing: only when a correction comes in

    try:
        preprocess.read_image(image)
    except preprocess.InputError as e:
        raise FeedbackError(f"the image cannot be read as a digit: {e}", status=e.status) from None


def check_answer(answer: dict) -> tuple:
    if not isinstance(answer, dict):
        raise FeedbackError(f"answer must be an object, not {type(answer).__name__}")
    digit, confidence = answer.get("digit"), answer.get("confidence")
    version, form = answer.get("version"), answer.get("serving_form")
    if digit is not None:
        check_label(digit)
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))):
        raise FeedbackError(f"answer.confidence must be a number, not {confidence!r}")
    if confidence is not None and not 0 <= confidence <= 1:
        raise FeedbackError(f"answer.confidence must be between 0 and 1, not {confidence!r}")
    for name, text in (("version", version), ("serving_form", form)):
        if text is not None and (not isinstance(text, str) or len(text) > TEXT_LIMIT):
            raise FeedbackError(f"answer.{name} must be text of at most {TEXT_LIMIT} characters")
    return digit, confidence, version, form


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The file name suffix an exported correction gets, by its format (C.IMAGE_FORMATS).
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def labelled_folder(folder) -> list[tuple[bytes, int]]:
    """(image file, digit) of a folder of labelled images: `export`'s LABEL-ID.png, or LABEL/NAME.png."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeedbackError(f"{folder} is not a folder of labelled images (LABEL-*.png or LABEL/*.png)")
    pairs = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        label = path.parent.name if path.parent != folder else path.name.split("-", 1)[0]
        if len(label) == 1 and label.isdigit():
            pairs.append((path.read_bytes(), int(label)))
    return pairs
