"""The review queue of `mnist-kit ui` (/review): a shadow's disagreements (shadow.db, written by the kserve runtime
through serving/kserve/disagreements.py) as the page shows them, their pictures, their labels.

Labels decide which version users get, so they come only through the pad's loopback server and the command line,
never from the serving runtime. shadow.db is opened once a shadow has written it, never created here.
"""

import io
import json
import threading
from pathlib import Path

from mnist_kit.errors import KitError
from mnist_kit.serving.kserve.disagreements import NOT_A_DIGIT, DisagreementStore, ShadowStoreError, label_name
from mnist_kit.worker import request_bodies

BATCH = 100  # the unlabelled disagreements one list holds, newest first: the page walks them, then asks again
# The raster images a browser shows, by their first bytes: a picture is served as one of these or drawn as the 28×28
# the model read, never with the content type its sender claimed (which could say text/html).
RASTERS = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


class ReviewError(KitError):
    """What the review endpoints refuse, with the HTTP status they answer it with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Review:
    """The review page's view of shadow.db: opened once a shadow has written it, never created here (a pad with
    nothing to review leaves no database behind)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.store = None
        self.lock = threading.Lock()

    def open(self) -> DisagreementStore | None:
        with self.lock:
            if self.store is None and self.path.is_file():
                self.store = DisagreementStore(self.path)
            return self.store

    def counts(self) -> dict:
        store = self.open()
        stats = store.stats() if store else {"stored": 0, "labelled": 0, "unlabelled": 0, "evicted": 0, "bytes": 0}
        return {"store": str(self.path), "exists": store is not None, "stats": stats}

    def queue(self) -> dict:
        """The newest unlabelled disagreements (BATCH at most), each with both answers and where its picture
        is; the counts; and, when there is nothing to review, why."""
        store = self.open()
        found = store.list(unlabelled=True, limit=BATCH) if store else []
        counts = self.counts()
        message = ""
        if store is None:
            message = (
                f"Nothing to review: there is no {self.path}. Disagreements arise when the kserve runtime shadows a "
                "candidate (mnist-kit serve --runtime kserve --models mnist.mar,mnist-2.0.mar --shadow 2.0): each "
                "picture the two versions read differently is kept there, waiting for a label."
            )
        elif not found and not counts["stats"]["stored"]:
            message = f"Nothing to review yet: the two versions have read every picture alike ({self.path} is empty)."
        elif not found:
            labelled = counts["stats"]["labelled"]
            message = f"Nothing to review: every disagreement in {self.path} has a label ({labelled} labelled)."
        return {**counts, "disagreements": [as_shown(d) for d in found], "message": message}

    def find(self, disagreement_id: int):
        store = self.open()
        found = store.get(disagreement_id) if store else None
        if found is None:
            raise ReviewError(self.missing(disagreement_id, store), 404)
        return found

    def label(self, disagreement_id: int, label: int) -> dict:
        """Label one disagreement: what it is now, in words, and the counts after it."""
        store = self.open()
        if store is None:
            raise ReviewError(self.missing(disagreement_id, store), 404)
        try:
            store.label(disagreement_id, label)
        except ShadowStoreError as e:  # the label was checked: only an id the store lacks is left
            raise ReviewError(str(e), 404) from None
        said = "not a digit" if label == NOT_A_DIGIT else f"a {label}"
        return {
            "id": disagreement_id,
            "label": label_name(label) if label == NOT_A_DIGIT else label,
            "message": f"disagreement {disagreement_id} is {said}",
            "stats": store.stats(),
        }

    def missing(self, disagreement_id: int, store) -> str:
        if store is None:
            return f"no disagreement {disagreement_id}: there is no {self.path} (nothing to review yet)"
        return f"no disagreement {disagreement_id} in {self.path}: never stored, or evicted"

    def close(self) -> None:
        with self.lock:
            if self.store is not None:
                self.store.close()
                self.store = None


def read_label(label) -> int:
    """A label as the page sends it: a digit 0-9, or "not-a-digit"; the store's number for it."""
    if label == label_name(NOT_A_DIGIT):
        return NOT_A_DIGIT
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise ReviewError(f'label must be a digit 0 to 9 or "not-a-digit", not {json.dumps(label)}')
    return label


def as_shown(d) -> dict:
    """A disagreement for the page: when, both versions' answers, and its picture's address and how it is shown."""
    answers = {
        "default": {"version": d.default_version, **d.default_answer},
        "shadow": {"version": d.shadow_version, **d.shadow_answer},
    }
    shown_as = "as sent" if raster(d.image) else "model input"
    row = {"id": d.id, "created": d.created, "content_type": d.content_type, "bytes": len(d.image)}
    return {**row, **answers, "image": f"/api/disagreements/{d.id}/image", "shown": shown_as}


def raster(image: bytes) -> str | None:
    """The raster type a browser shows these bytes as, by their first bytes; None for anything else (a v1 or v2
    JSON body, a TIFF)."""
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in RASTERS if image.startswith(magic)), None)


def picture(d) -> tuple[bytes, str]:
    """A disagreement's picture and its type: the bytes as sent where a browser shows them, else the 28×28 the model
    read, as PNG."""
    kind = raster(d.image)
    return (d.image, kind) if kind else (model_input_png(d.image, d.content_type, d.default_answer), "image/png")


def model_input_png(body: bytes, content_type: str, answer: dict) -> bytes:
    """The 28×28 the model read of a request whose bytes are no image a browser shows (a KServe v1 or v2 JSON body),
    read again by the serving core; white ink on black, as MNIST's."""
    from PIL import Image

    request = request_bodies.read({"body": body}, {"content-type": content_type})
    picture = answer.get("picture") or 0
    if request.error or picture >= len(request.images):
        reason = request.error or f"it has no picture {picture}"
        raise ReviewError(f"this request's picture cannot be shown: {reason}", 422)
    png = io.BytesIO()
    Image.fromarray(request.images[picture].pixels).save(png, "PNG")
    return png.getvalue()
