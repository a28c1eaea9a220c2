"""Corrections from the pads, kept on this machine: the exact image that was sent, the answer it got (digit,
confidence, model version, serving form), the digit it really is, and when, in an SQLite database in the kit's home
(`feedback.db`, standard library `sqlite3`).

Beside them, what an A/B test needs to stay honest: every fine-tune and the images it trained on, by content hash
(corrections and `train --extra` files alike), and every A/B verdict and the images it was given on, so that `ab`
scores only images no fine-tune learnt and can say how often a set has been looked at; and every decision of
`canary run` (a stage passed, waiting, promoted, rolled back) with its figures.

Each correction is one transaction in a write-ahead log, so a process killed mid-write leaves the database as it
was before that correction or after it, never with half a row. The schema's version is SQLite's `user_version`;
a database from a newer kit is refused rather than misread.
"""

import csv
import io
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.files import sha256

SCHEMA_VERSION = 3
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
SCHEMA_2 = """
CREATE TABLE finetunes (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    checkpoint TEXT NOT NULL,
    weights_sha256 TEXT
);
CREATE TABLE trained (
    finetune INTEGER NOT NULL REFERENCES finetunes (id),
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX trained_sha256 ON trained (sha256);
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    image_set TEXT NOT NULL,
    version_a TEXT NOT NULL,
    version_b TEXT NOT NULL,
    look INTEGER NOT NULL,
    alpha REAL NOT NULL,
    p REAL NOT NULL,
    verdict TEXT NOT NULL
);
CREATE TABLE verdict_images (
    verdict INTEGER NOT NULL REFERENCES verdicts (id),
    sha256 TEXT NOT NULL
);
CREATE INDEX verdict_images_sha256 ON verdict_images (sha256);
"""
SCHEMA_3 = """
CREATE TABLE canary_decisions (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    default_version TEXT NOT NULL,
    candidate_version TEXT NOT NULL,
    stage TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    figures TEXT NOT NULL
);
"""
MIGRATIONS = (SCHEMA, SCHEMA_2, SCHEMA_3)  # the schema of version v is MIGRATIONS[:v], applied in order
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
    sha256: str

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
            if version < SCHEMA_VERSION:
                with db:  # one transaction: a database is at one schema or the next, never between
                    db.executescript("BEGIN;" + "".join(MIGRATIONS[version:]))
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
                (time.time(), label, image, sha256(image), answered, confidence, version, form),
            )
        self.label_disagreements(image, label)
        return cursor.lastrowid

    def label_disagreements(self, image: bytes, label: int) -> int:
        """A correction labels the shadow's disagreements on the same bytes, in shadow.db beside this database where
        a shadow has written one (serving/kserve/disagreements.py); how many."""
        shadow = self.path.with_name(C.SHADOW_DB)
        if not shadow.is_file():
            return 0
        from mnist_kit.serving.kserve.disagreements import DisagreementStore

        store = DisagreementStore(shadow)
        try:
            return store.label_image(sha256(image), label)
        finally:
            store.close()

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
                "SELECT id, created, label, image, answered, confidence, model_version, serving_form, sha256 "
                "FROM feedback ORDER BY id"
            ).fetchall()
        return [Correction(*row) for row in rows]

    def start_finetune(self, checkpoint, trained: list[tuple[str, str]]) -> int:
        """Record a fine-tune of `checkpoint` and what it trains on, (sha256 of the image file, where it came from)
        each, before it starts: were it killed before it writes its weights, its images still count as trained on.
        Its id."""
        with self.lock, self.db:
            cursor = self.db.execute(
                "INSERT INTO finetunes (created, checkpoint) VALUES (?, ?)", (time.time(), str(checkpoint))
            )
            self.db.executemany(
                "INSERT INTO trained (finetune, sha256, source) VALUES (?, ?, ?)",
                [(cursor.lastrowid, digest, source) for digest, source in trained],
            )
        return cursor.lastrowid

    def finish_finetune(self, finetune: int, weights_sha256: str) -> None:
        """The fine-tune wrote its weights: their sha256 names the model it made."""
        with self.lock, self.db:
            self.db.execute("UPDATE finetunes SET weights_sha256 = ? WHERE id = ?", (weights_sha256, finetune))

    def finetunes(self) -> dict[int, dict]:
        """Every recorded fine-tune by id: when, its checkpoint, its weights' sha256 (None if it never finished),
        and how many images it trained on."""
        with self.lock:
            rows = self.db.execute(
                "SELECT f.id, f.created, f.checkpoint, f.weights_sha256, COUNT(t.sha256) FROM finetunes f "
                "LEFT JOIN trained t ON t.finetune = f.id GROUP BY f.id ORDER BY f.id"
            ).fetchall()
        fields = ("created", "checkpoint", "weights_sha256", "images")
        return {row[0]: dict(zip(fields, row[1:])) for row in rows}

    def trained_by(self) -> dict[str, list[int]]:
        """sha256 of an image file → the fine-tunes that trained on it, for every image any fine-tune trained on."""
        with self.lock:
            rows = self.db.execute("SELECT DISTINCT sha256, finetune FROM trained ORDER BY finetune").fetchall()
        found = {}
        for digest, finetune in rows:
            found.setdefault(digest, []).append(finetune)
        return found

    def verdicts_per_image(self) -> dict[str, int]:
        """sha256 of an image file → how many recorded A/B verdicts were given on it, for every image some was."""
        with self.lock:
            return dict(self.db.execute("SELECT sha256, COUNT(DISTINCT verdict) FROM verdict_images GROUP BY sha256"))

    def record_verdict(self, image_set: str, digests, *, versions: tuple[str, str], look: int, alpha, p, verdict):
        """An A/B verdict and the images it was given on, in one transaction."""
        with self.lock, self.db:
            cursor = self.db.execute(
                "INSERT INTO verdicts (created, image_set, version_a, version_b, look, alpha, p, verdict) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), image_set, *versions, look, alpha, p, verdict),
            )
            self.db.executemany(
                "INSERT INTO verdict_images (verdict, sha256) VALUES (?, ?)",
                [(cursor.lastrowid, digest) for digest in set(digests)],
            )
        return cursor.lastrowid

    def record_decision(self, decision: dict) -> int:
        """One decision of `canary run` (canary_stages.Decision.as_dict()): its versions, stage, what it decided and
        why, and all its figures as JSON."""
        with self.lock, self.db:
            cursor = self.db.execute(
                "INSERT INTO canary_decisions (created, default_version, candidate_version, stage, decision, reason, "
                "figures) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    decision["time"],
                    decision["default"],
                    decision["candidate"],
                    decision["stage"],
                    decision["decision"],
                    decision["reason"],
                    json.dumps(decision["figures"]),
                ),
            )
        return cursor.lastrowid

    def decisions(self, candidate: str | None = None) -> list[dict]:
        """The recorded canary decisions, oldest first (of one candidate version, when given)."""
        query = "SELECT created, default_version, candidate_version, stage, decision, reason, figures FROM "
        query += "canary_decisions" + (" WHERE candidate_version = ?" if candidate else "") + " ORDER BY id"
        with self.lock:
            rows = self.db.execute(query, (candidate,) if candidate else ()).fetchall()
        fields = ("time", "default", "candidate", "stage", "decision", "reason")
        return [{**dict(zip(fields, row[:6])), "figures": json.loads(row[6])} for row in rows]

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
    from mnist_kit.worker.request_errors import InputError

    try:
        preprocess.read_image(image)
    except InputError as e:
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


def labelled_files(folder) -> list[tuple[Path, int]]:
    """(path, digit) of each image in a folder of labelled images: `export`'s LABEL-ID.png, or LABEL/NAME.png."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeedbackError(f"{folder} is not a folder of labelled images (LABEL-*.png or LABEL/*.png)")
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        label = path.parent.name if path.parent != folder else path.name.split("-", 1)[0]
        if len(label) == 1 and label.isdigit():
            found.append((path, int(label)))
    return found


def labelled_folder(folder) -> list[tuple[bytes, int]]:
    """(image file, digit) of a folder of labelled images."""
    return [(path.read_bytes(), label) for path, label in labelled_files(folder)]
