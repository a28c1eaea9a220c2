"""`mnist-kit ui`: one static page, and its /api/... answered by TorchServe through the kit's client.

The standard library's ThreadingHTTPServer on loopback: the page (HTML, CSS, plain JavaScript in static/, shipped
as package data, nothing from a CDN) and four JSON endpoints: status, predict, explain, and feedback, which stores a
correction in the kit's feedback database (mnist_kit/feedback/store.py). TorchServe needs no CORS opening, since
the browser only talks to this server, and the token is read here (mnist_kit.ui.pad_client.Reader) and never sent to
the browser.

The review page (/review) labels a shadow's disagreements (shadow.db) through /api/disagreements: the list, each
picture, the label, the counts (mnist_kit/ui/review.py).
"""

import base64
import json
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.feedback.store import FeedbackError, Store
from mnist_kit.serving import client
from mnist_kit.ui.pad_client import Reader, shown, verdict
from mnist_kit.ui.review import Review, picture, read_label
from mnist_kit.worker.request_bodies import media_type

PAGES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
PAGES |= {"/review": "review.html", "/review.html": "review.html", "/review.js": "review.js"}
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
# Everything the page loads comes from this server; inline scripts and other origins are refused.
POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; form-action 'none'"
FEEDBACK_BYTES = C.MAX_REQUEST_BYTES * 4 // 3 + 4096  # a base64 image of the largest size a request may have
LOCAL_HOSTS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$")
DISAGREEMENT = re.compile(r"^/api/disagreements/(\d+)/(image|label)$")
LABEL_BYTES = 1024  # {"label": "not-a-digit"} with room to spare


class Handler(BaseHTTPRequestHandler):
    server: "PadServer"
    server_version = "mnist-kit-ui"

    def do_GET(self):
        if not self._local():
            return
        path = self.path.split("?")[0]
        if path == "/api/status":
            return self._json(200, self.server.reader.status())
        if path == "/api/disagreements":
            return self._review(lambda review: self._json(200, review.queue()))
        if path == "/api/disagreements/stats":
            return self._review(lambda review: self._json(200, review.counts()))
        if (found := DISAGREEMENT.match(path)) and found[2] == "image":
            return self._review(lambda review: self._send(200, *picture(review.find(int(found[1])))))
        if path == "/metrics":  # the corrections per version and digit, for Prometheus
            body = self.server.feedback.prometheus().encode()
            return self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if path not in PAGES:
            return self._json(404, {"message": f"no page {path}: the pad is at /"})
        name = PAGES[path]
        body = resources.files("mnist_kit.ui").joinpath("static", name).read_bytes()
        self._send(200, body, f"{TYPES[name.rsplit('.', 1)[1]]}; charset=utf-8")

    def do_POST(self):
        if not self._local():
            return
        path = self.path.split("?")[0]
        if path == "/api/feedback":
            return self._feedback()
        if (found := DISAGREEMENT.match(path)) and found[2] == "label":
            return self._label(int(found[1]))
        if path not in ("/api/predict", "/api/explain"):
            return self._json(404, {"message": f"no endpoint {path}: POST /api/predict, /api/explain or /api/feedback"})
        data = self._image()
        if data is None:
            return
        reader = self.server.reader
        try:
            if path == "/api/predict":
                reading = reader.read(data)
                return self._json(200, {**reading.to_dict(), "verdict": verdict(reading), "shown": shown(reading)})
            return self._json(200, reader.explain(data))
        except client.ClientError as e:
            status, message = reader.failure(e)
            return self._json(status, {"message": message, "status": status})
        except Exception as e:  # the page must still get a message, not a dropped connection
            return self._json(500, {"message": f"the pad's server failed: {type(e).__name__}: {e}", "status": 500})

    def _feedback(self) -> None:
        """{"image": "<base64 image file>", "label": 7, "answer": {...}}: a correction, stored, or a 4xx saying
        what is wrong with it. JSON only, which a page of another site cannot send here without a CORS preflight,
        which this server never grants."""
        kind = media_type(self.headers.get("Content-Type"))
        if kind != "application/json":
            return self._json(415, {"message": f"send feedback as application/json, not {kind or 'none'!r}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > FEEDBACK_BYTES:
            return self._json(
                413, {"message": f"feedback too large: {length:,} bytes, the limit is {FEEDBACK_BYTES:,}"}
            )
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise FeedbackError('send an object: {"image": "<base64 image file>", "label": 7}')
            if not isinstance(body.get("image"), str):
                raise FeedbackError('"image" must be the image file, base64-encoded')
            image = base64.b64decode(body["image"], validate=True)
            answer = body.get("answer")
            if isinstance(answer, dict) and "serving_form" not in answer:
                answer = {**answer, "serving_form": self.server.reader.serving_form()}
            stored = self.server.feedback.add(image, body.get("label"), answer)
        except ValueError:  # JSON or base64 that does not parse
            return self._json(400, {"message": 'not JSON with a base64 "image": send {"image": "...", "label": 7}'})
        except FeedbackError as e:
            return self._json(e.status, {"message": str(e)})
        self._json(201, {"id": stored, "label": body["label"], "message": "thank you: stored for retraining"})

    def _review(self, answer) -> None:
        """`answer(review)`, or its refusal as JSON: a ReviewError's status, 500 for a shadow.db this kit cannot read
        (one from a newer kit, or no database at all)."""
        try:
            return answer(self.server.review)
        except KitError as e:
            return self._json(getattr(e, "status", 500), {"message": str(e)})

    def _label(self, disagreement_id: int) -> None:
        """{"label": 7} or {"label": "not-a-digit"}: the disagreement labelled, and the counts; else a 4xx saying
        what is wrong. JSON only, as /api/feedback: another site's page cannot send it without a CORS preflight."""
        kind = media_type(self.headers.get("Content-Type"))
        if kind != "application/json":
            return self._json(415, {"message": f"send the label as application/json, not {kind or 'none'!r}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > LABEL_BYTES:
            return self._json(413, {"message": f"label too large: {length:,} bytes, the limit is {LABEL_BYTES:,}"})
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:  # JSON that does not parse
            return self._json(400, {"message": 'not JSON: send {"label": 7} or {"label": "not-a-digit"}'})
        if not isinstance(body, dict) or "label" not in body:
            return self._json(400, {"message": 'send an object: {"label": 7} or {"label": "not-a-digit"}'})
        self._review(lambda review: self._json(200, review.label(disagreement_id, read_label(body["label"]))))

    def _image(self) -> bytes | None:
        """The request body, or None after answering why it cannot be one. Only image types are taken, which
        also makes a browser ask first (CORS preflight) before another site's page could post here."""
        kind = media_type(self.headers.get("Content-Type"))
        if not (kind.startswith("image/") or kind == "application/octet-stream"):
            self._json(415, {"message": f"send the image with an image content type, not {kind or 'none'!r}"})
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > C.MAX_REQUEST_BYTES:
            self._json(
                413, {"message": f"image too large: {length:,} bytes, the limit is {C.MAX_REQUEST_BYTES:,} bytes"}
            )
            return None
        data = self.rfile.read(length)
        if not data:
            self._json(400, {"message": "empty request: draw a digit, or pick an image"})
            return None
        return data

    def _local(self) -> bool:
        """Answer only requests addressed to this machine by name: no other site's page via DNS rebinding."""
        if LOCAL_HOSTS.match(self.headers.get("Host", "")):
            return True
        self._json(403, {"message": "the pad answers requests to 127.0.0.1 or localhost only"})
        return False

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # one line per request on stderr would drown the command's own output
        pass


class PadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        reader: Reader,
        port: int = C.UI_PORT,
        host: str = C.HOST,
        *,
        feedback: Store | None = None,
        shadow: Path | None = None,
    ):
        """`shadow`: the disagreements' database to review; by default shadow.db beside the corrections' database,
        the file the pads' corrections label too (both in the kit's home unless told otherwise)."""
        self.reader = reader
        self.feedback = feedback or Store()
        self.review = Review(shadow or self.feedback.path.with_name(C.SHADOW_DB))
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise KitError(f"cannot serve the pad on {host}:{port}: {e.strerror}; pass another --port") from None

    def server_close(self):
        super().server_close()
        self.review.close()

    def handle_error(self, request, client_address):
        """A page that moved on (a newer drawing, a closed tab) hangs up before its answer: nothing to report."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
