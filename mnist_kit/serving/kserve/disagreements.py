"""The shadow's disagreements: every picture a shadow version answered otherwise than the default, with the bytes as
sent, both answers and when, in an SQLite database in the kit's home (`shadow.db`, standard library `sqlite3`), where
`mnist-kit shadow label` and the pads give them labels and the canary's verdict reads them.

Bounded: each write is one transaction that inserts a row and then evicts the oldest rows while the images exceed
the cap, counting them, so a server left shadowing for weeks keeps a file of about the cap. Several processes write
one file (a runtime's workers; replicas on one machine's folder): write-ahead log, each write takes the write lock at
its start (BEGIN IMMEDIATE) and waits for the others' up to SHADOW_BUSY_TIMEOUT_S. The schema's version is SQLite's
`user_version`; a database from a newer kit is refused rather than misread.

Inside a server worker, `DisagreementWriter` queues rows for a thread of its own: the event loop never waits on the
disk. Standard library and the kit's foundation only: the runtime's workers and the command line import it.
"""

import builtins
import csv
import json
import logging
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.files import sha256

NOT_A_DIGIT = C.SHADOW_NOT_A_DIGIT_LABEL
SCHEMA_VERSION = 1
SCHEMA = f"""
CREATE TABLE disagreements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    image BLOB NOT NULL,
    default_version TEXT NOT NULL,
    default_answer TEXT NOT NULL,
    shadow_version TEXT NOT NULL,
    shadow_answer TEXT NOT NULL,
    label INTEGER CHECK (label BETWEEN 0 AND {NOT_A_DIGIT})
);
CREATE INDEX disagreements_sha256 ON disagreements (sha256);
CREATE INDEX disagreements_label ON disagreements (label);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('bytes', 0), ('evicted', 0);
"""
FIELDS = (
    "id, created, sha256, content_type, image, default_version, default_answer, shadow_version, shadow_answer, label"
)
# The file name suffix an exported image gets, by its first bytes (the images are kept as sent, never re-encoded).
MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"II*\0", ".tif"))

log = logging.getLogger(__name__)


class ShadowStoreError(KitError):
    """A label or id the store cannot take, or a database it cannot use."""


@dataclass(frozen=True)
class Disagreement:
    id: int
    created: float
    sha256: str
    content_type: str
    image: bytes
    default_version: str
    default_answer: dict
    shadow_version: str
    shadow_answer: dict
    label: int | None  # None: unlabelled; 0-9; NOT_A_DIGIT


def default_path() -> Path:
    from mnist_kit.paths import home

    return home() / C.SHADOW_DB


def label_name(label: int | None) -> str:
    """How a label is written for people and scripts: a digit, "not-a-digit", or "unlabelled"."""
    return "unlabelled" if label is None else "not-a-digit" if label == NOT_A_DIGIT else str(label)


def check_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= NOT_A_DIGIT:
        raise ShadowStoreError(f"label must be a digit 0 to 9 or {NOT_A_DIGIT} (not a digit), not {label!r}")
    return label


# A labelled disagreement without its image: (sha256, default version, its answer, shadow version, its answer, label).
Labelled = tuple[str, str, dict, str, dict, int]


class DisagreementStore:
    """`DisagreementStore(path)`: the database, created with its schema if new. One connection, shared by the
    threads of one process one at a time."""

    def __init__(self, path=None, *, max_bytes: int = C.SHADOW_STORE_BYTES):
        self.path = Path(path or default_path())
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the transactions are this class's own (BEGIN IMMEDIATE), not the module's.
        self.db = sqlite3.connect(
            self.path, timeout=C.SHADOW_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self.create()
        except BaseException:
            self.db.close()
            raise

    def create(self) -> None:
        """The file in WAL mode, with this kit's schema; a newer schema refused."""
        write_ahead_log(self.db)
        # Each row whole or not at all, as with FULL; a power cut may lose the last rows, not the file, and the
        # writer thread does not wait on an fsync per disagreement.
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.write() as db:  # one transaction: two processes opening a new file create the schema once
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ShadowStoreError(f"{self.path} has schema {version}, newer than this kit's {SCHEMA_VERSION}")
            if version == 0:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def write(self):
        """One write transaction, holding SQLite's write lock from its start: no other writer comes between its
        reads and its writes, and a busy file is waited for rather than failed."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def add(
        self,
        image: bytes,
        *,
        content_type: str,
        default_version: str,
        default_answer: dict,
        shadow_version: str,
        shadow_answer: dict,
        created: float | None = None,
    ) -> int:
        """Store one disagreement, then evict the oldest while the images exceed the cap (this one too, were it
        alone larger), in one transaction. Its id."""
        row = (
            time.time() if created is None else created,
            sha256(image),
            content_type,
            image,
            default_version,
            json.dumps(default_answer),
            shadow_version,
            json.dumps(shadow_answer),
        )
        with self.write() as db:
            cursor = db.execute(
                "INSERT INTO disagreements (created, sha256, content_type, image, default_version, default_answer, "
                "shadow_version, shadow_answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            total = self.counter(db, "bytes") + len(image)
            evicted, total = self.evict(db, total) if total > self.max_bytes else (0, total)
            db.execute("UPDATE counters SET value = ? WHERE name = 'bytes'", (total,))
            db.execute("UPDATE counters SET value = value + ? WHERE name = 'evicted'", (evicted,))
        return cursor.lastrowid

    def evict(self, db, total: int) -> tuple[int, int]:
        """Delete the oldest rows until the images' bytes are within the cap: (how many, the bytes left)."""
        count, last = 0, None
        cursor = db.execute("SELECT id, length(image) FROM disagreements ORDER BY id")
        for row_id, size in cursor:
            if total <= self.max_bytes:
                break
            count, last, total = count + 1, row_id, total - size
        cursor.close()
        db.execute("DELETE FROM disagreements WHERE id <= ?", (last,))
        return count, total

    @staticmethod
    def counter(db, name: str) -> int:
        return db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def list(self, *, unlabelled: bool = False, limit: int | None = None) -> list[Disagreement]:
        """The disagreements kept, newest first; only those without a label, with `unlabelled`."""
        where = "WHERE label IS NULL" if unlabelled else ""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {FIELDS} FROM disagreements {where} ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [Disagreement(*row[:6], json.loads(row[6]), row[7], json.loads(row[8]), row[9]) for row in rows]

    def labels(self) -> "builtins.list[Labelled]":
        """Every labelled disagreement without its image (a verdict needs the answers, not up to the cap of bytes):
        (sha256, default version, its answer, shadow version, its answer, label)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT sha256, default_version, default_answer, shadow_version, shadow_answer, label "
                "FROM disagreements WHERE label IS NOT NULL ORDER BY id"
            ).fetchall()
        return [
            (digest, first, json.loads(a), second, json.loads(b), label) for digest, first, a, second, b, label in rows
        ]

    def get(self, disagreement_id: int) -> Disagreement | None:
        """One disagreement by its id (the review page's picture), without reading the others' images; None where
        there is none: never stored, or evicted."""
        with self.lock:
            row = self.db.execute(f"SELECT {FIELDS} FROM disagreements WHERE id = ?", (disagreement_id,)).fetchone()
        return row and Disagreement(*row[:6], json.loads(row[6]), row[7], json.loads(row[8]), row[9])

    def label(self, disagreement_id: int, label: int) -> None:
        """Say what the picture of one disagreement really is: 0-9, or NOT_A_DIGIT."""
        check_label(label)
        with self.write() as db:
            updated = db.execute("UPDATE disagreements SET label = ? WHERE id = ?", (label, disagreement_id)).rowcount
        if not updated:
            raise ShadowStoreError(f"no disagreement {disagreement_id} in {self.path}: never stored, or evicted")

    def label_image(self, sha256: str, label: int) -> int:
        """Label every disagreement on the image with this content hash (a correction from the pads of the same
        bytes); how many."""
        check_label(label)
        with self.write() as db:
            return db.execute("UPDATE disagreements SET label = ? WHERE sha256 = ?", (label, sha256)).rowcount

    def stats(self) -> dict:
        """How many are kept, labelled and not; how many were evicted; the bytes of the images kept."""
        with self.lock:
            stored, labelled = self.db.execute("SELECT COUNT(*), COUNT(label) FROM disagreements").fetchone()
            counters = dict(self.db.execute("SELECT name, value FROM counters"))
        return {
            "stored": stored,
            "labelled": labelled,
            "unlabelled": stored - labelled,
            "evicted": counters["evicted"],
            "bytes": counters["bytes"],
        }

    def export(self, folder) -> int:
        """Every labelled disagreement as FOLDER/LABEL-ID.png (.jpg, ...: the bytes as sent), the layout `train
        --extra` reads (which skips not-a-digit-ID.png), and shadow.csv beside them; how many."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        labelled = [d for d in reversed(self.list()) if d.label is not None]
        with open(folder / "shadow.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "label", "default_version", "default_digit", "shadow_version", "shadow_digit"])
            for d in labelled:
                name = f"{label_name(d.label)}-{d.id:06d}{suffix(d.image)}"
                (folder / name).write_bytes(d.image)
                default, shadow = d.default_answer.get("digit"), d.shadow_answer.get("digit")
                writer.writerow([name, label_name(d.label), d.default_version, default, d.shadow_version, shadow])
        return len(labelled)

    def close(self) -> None:
        with self.lock:
            self.db.close()


def write_ahead_log(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode. SQLite answers "database is locked" at once, without waiting, when another process
    holds the new file meanwhile (creating it too): so wait here, as long as for any write."""
    deadline = time.monotonic() + C.SHADOW_BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def suffix(image: bytes) -> str:
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return ".webp"
    return next((ending for magic, ending in MAGIC if image.startswith(magic)), ".png")


class DisagreementWriter:
    """A server worker's way to the store: `submit` only queues (the event loop never waits on the disk); a daemon
    thread writes the rows in the order received. When `max_pending` are waiting, a new one is dropped and counted
    (`dropped`): a slow disk costs disagreements, never answers."""

    def __init__(self, path=None, *, max_bytes: int = C.SHADOW_STORE_BYTES, max_pending: int = C.SHADOW_MAX_PENDING):
        self.store = DisagreementStore(path, max_bytes=max_bytes)
        self.max_pending = max_pending
        self.queue = queue.SimpleQueue()
        self.written = self.dropped = self.failed = 0
        self.accepted = self.handled = 0
        self.done = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self.run, name="shadow-disagreements", daemon=True)
        self.thread.start()

    def submit(
        self,
        image: bytes,
        *,
        content_type: str,
        default_version: str,
        default_answer: dict,
        shadow_version: str,
        shadow_answer: dict,
    ) -> bool:
        """Queue one disagreement for the writer thread; False when it was dropped (queue full, or closed)."""
        if self.closed or self.accepted - self.handled >= self.max_pending:
            self.dropped += 1
            return False
        self.accepted += 1
        row = {"content_type": content_type, "default_version": default_version, "default_answer": default_answer}
        self.queue.put((image, {**row, "shadow_version": shadow_version, "shadow_answer": shadow_answer}))
        return True

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            image, fields = item
            try:
                self.store.add(image, **fields)
                self.written += 1
            except Exception:  # a full disk or a broken file loses this row, not the thread
                self.failed += 1
                log.exception("could not store a shadow disagreement in %s", self.store.path)
            with self.done:
                self.handled += 1
                self.done.notify_all()

    def flush(self, timeout: float = 5) -> bool:
        """Wait until everything submitted is written (tests, shutdown); whether it was, in time."""
        with self.done:
            return self.done.wait_for(lambda: self.handled >= self.accepted, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread and close the store."""
        self.closed = True
        self.queue.put(None)
        self.thread.join(C.SHADOW_BUSY_TIMEOUT_S)
        if not self.thread.is_alive():
            self.store.close()
