"""Corrections from the pads ("wrong? it is a _"): stored with the exact image and the answer they correct in the kit's
SQLite database, through the ui server's /api/feedback (refusing bad bodies with a 4xx), the web page in Chromium and
the Qt pad offscreen; listed, counted and exported by `mnist-kit feedback`; never half-written."""

import base64
import csv
import hashlib
import http.client
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from conftest import DIGITS
from harness import pad_server
from PIL import ExifTags, Image

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback.store import SCHEMA, SCHEMA_VERSION, FeedbackError, Store
from mnist_kit.serving.processes import free_port

NOWHERE = f"http://{C.HOST}:{free_port()}"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / C.FEEDBACK_DB)
    yield store
    store.close()


def seven() -> bytes:
    return DIGITS[7].read_bytes()


@pytest.mark.unit
def test_a_correction_is_stored_with_the_exact_image_and_the_answer_it_corrects(store):
    answer = {"digit": 1, "confidence": 0.61, "version": "1.0", "serving_form": "int8"}
    stored = store.add(seven(), 7, answer)
    [correction] = store.corrections()
    assert correction.id == stored and correction.image == seven() and correction.label == 7
    assert (correction.answered, correction.confidence, correction.model_version, correction.serving_form) == (
        1,
        0.61,
        "1.0",
        "int8",
    )
    assert correction.wrong and abs(correction.created - time.time()) < 60


@pytest.mark.unit
def test_a_correction_labels_the_shadows_disagreements_on_the_same_image_and_no_other(store, tmp_path):
    from mnist_kit.serving.kserve.disagreements import DisagreementStore

    shadow = DisagreementStore(tmp_path / C.SHADOW_DB)
    answers = {"default_answer": {"digit": 1, "confidence": 0.6, "flags": []}, "default_version": "1.0"}
    answers |= {"shadow_answer": {"digit": 7, "confidence": 0.9, "flags": []}, "shadow_version": "2.0"}
    same = shadow.add(seven(), content_type="image/png", **answers)
    other = shadow.add(DIGITS[3].read_bytes(), content_type="image/png", **answers)
    store.add(seven(), 7)
    assert {d.id: d.label for d in shadow.list()} == {same: 7, other: None}
    shadow.close()


@pytest.mark.unit
def test_a_correction_without_a_shadow_creates_no_shadow_store(store, tmp_path):
    store.add(seven(), 7)
    assert not (tmp_path / C.SHADOW_DB).exists()


@pytest.mark.unit
def test_the_database_records_its_schema_version_and_refuses_a_newer_one(tmp_path):
    path = tmp_path / C.FEEDBACK_DB
    Store(path).add(seven(), 7)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(FeedbackError, match="newer than this kit's"):
        Store(path).corrections()


@pytest.mark.unit
def test_a_database_of_the_first_schema_is_brought_up_to_date_with_its_corrections(tmp_path):
    path = tmp_path / C.FEEDBACK_DB
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA.split("CREATE INDEX")[0])
        db.execute("INSERT INTO feedback (created, label, image, sha256) VALUES (1, 7, ?, 'x')", (seven(),))
        db.execute("PRAGMA user_version=1")
    store = Store(path)
    assert [c.label for c in store.corrections()] == [7] and store.finetunes() == {}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.unit
def test_a_pad_that_stores_nothing_creates_no_database(tmp_path):
    Store(tmp_path / C.FEEDBACK_DB)
    assert not (tmp_path / C.FEEDBACK_DB).exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("image", "label", "answer", "status", "message"),
    [
        (seven(), 10, None, 400, "label must be a digit 0 to 9, not 10"),
        (seven(), "7", None, 400, "label must be a digit 0 to 9, not '7'"),
        (seven(), True, None, 400, "label must be a digit 0 to 9, not True"),
        (b"", 7, None, 400, "no image"),
        (b"not an image", 7, None, 400, "the image cannot be read as a digit"),
        (seven(), 7, {"confidence": 2}, 400, "answer.confidence must be between 0 and 1"),
        (seven(), 7, {"version": "x" * 100}, 400, "answer.version must be text of at most 64 characters"),
        (seven(), 7, "right", 400, "answer must be an object"),
    ],
)
def test_a_bad_correction_is_refused_with_what_is_wrong(store, image, label, answer, status, message):
    with pytest.raises(FeedbackError, match=message) as refused:
        store.add(image, label, answer)
    assert refused.value.status == status and store.corrections() == []


@pytest.mark.unit
def test_a_blank_image_is_refused_as_no_digit(store):
    blank = io.BytesIO()
    Image.new("L", (28, 28), 255).save(blank, "PNG")
    with pytest.raises(FeedbackError, match="no digit found"):
        store.add(blank.getvalue(), 3)


@pytest.mark.unit
def test_export_writes_a_png_per_correction_named_by_label_and_a_csv(store, tmp_path):
    store.add(seven(), 7, {"digit": 1, "confidence": 0.5, "version": "1.0"})
    store.add(DIGITS[3].read_bytes(), 3)
    assert store.export(tmp_path / "out") == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["3-000002.png", "7-000001.png", "feedback.csv"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "feedback.csv")))
    assert [(r["file"], r["label"], r["answered"], r["model_version"]) for r in rows] == [
        ("7-000001.png", "7", "1", "1.0"),
        ("3-000002.png", "3", "", ""),
    ]
    assert (tmp_path / "out" / "7-000001.png").read_bytes() == seven()


@pytest.mark.unit
def test_export_keeps_a_phone_photos_bytes_and_its_exif_orientation(store, tmp_path):
    photo = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: viewers and the kit turn it upright
    Image.open(DIGITS[4]).convert("RGB").resize((112, 112)).save(photo, "JPEG", exif=exif)
    store.add(photo.getvalue(), 4)
    store.export(tmp_path / "out")
    exported = tmp_path / "out" / "4-000001.jpg"
    assert exported.read_bytes() == photo.getvalue()
    assert Image.open(exported).getexif()[ExifTags.Base.Orientation] == 6


@pytest.mark.unit
def test_feedback_commands_list_count_and_export(store, tmp_path):
    store.add(seven(), 7, {"digit": 1, "confidence": 0.55, "version": "1.0"})
    store.add(seven(), 7)
    db = ["feedback", "--db", str(store.path)]
    listed = CliRunner().invoke(cli, [*db, "list"])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].endswith("it is a 7: answered 1 (55 %) by 1.0")
    stats = json.loads(CliRunner().invoke(cli, [*db, "stats", "--json"]).output)
    assert stats == {
        "total": 2,
        "per_label": {"7": 2},
        "per_version": {"1.0": {"corrections": 1, "wrong": 1}, "unknown": {"corrections": 1, "wrong": 0}},
    }
    exported = CliRunner().invoke(cli, [*db, "export", str(tmp_path / "out")])
    assert exported.exit_code == 0 and "exported 2 corrections" in exported.output


WRITER = textwrap.dedent(
    """
    import sys
    from mnist_kit.feedback.store import Store
    store, image = Store(sys.argv[1]), open(sys.argv[2], "rb").read()
    print("ready", flush=True)
    while True:
        store.add(image, 7, {"digit": 1, "confidence": 0.5, "version": "1.0"})
    """
)


@pytest.mark.unit
def test_a_writer_killed_mid_write_leaves_only_whole_rows(tmp_path):
    """SIGKILL to a process adding corrections as fast as it can: the database opens, passes SQLite's integrity
    check, and every row it holds is whole (its image the one sent, by its hash)."""
    path = tmp_path / C.FEEDBACK_DB
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(DIGITS[7])], stdout=subprocess.PIPE)
    assert writer.stdout.readline() == b"ready\n"
    time.sleep(1.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store = Store(path)
    assert store.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    corrections = store.corrections()
    assert len(corrections) > 10
    digest = hashlib.sha256(seven()).hexdigest()
    rows = store.db.execute("SELECT sha256, label, answered, model_version FROM feedback").fetchall()
    assert set(rows) == {(digest, 7, 1, "1.0")} and all(c.image == seven() for c in corrections)


def post(url: str, body, content_type: str = "application/json") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type, "Host": "127.0.0.1"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.unit
def test_the_ui_server_stores_a_correction_posted_as_json(store):
    with pad_server(NOWHERE, feedback=store) as pad:
        body = {"image": base64.b64encode(seven()).decode(), "label": 7, "answer": {"digit": 1, "confidence": 0.4}}
        status, answer = post(f"{pad.url}api/feedback", body)
    assert status == 201 and answer["label"] == 7
    [correction] = store.corrections()
    assert correction.image == seven() and correction.answered == 1 and correction.serving_form is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, 'not JSON with a base64 "image"'),
        ({"image": "%%%", "label": 7}, "application/json", 400, 'not JSON with a base64 "image"'),
        ({"label": 7}, "application/json", 400, '"image" must be the image file, base64-encoded'),
        ([1, 2], "application/json", 400, "send an object"),
        ({"image": base64.b64encode(seven()).decode(), "label": 12}, "application/json", 400, "label must be"),
        ({"image": base64.b64encode(b"text").decode(), "label": 1}, "application/json", 400, "cannot be read"),
        ({"image": "", "label": 1}, "text/plain", 415, "send feedback as application/json"),
    ],
)
def test_the_ui_server_refuses_bad_feedback_with_a_4xx_naming_the_problem(store, body, content_type, status, message):
    with pad_server(NOWHERE, feedback=store) as pad:
        answered, answer = post(f"{pad.url}api/feedback", body, content_type)
    assert answered == status and message in answer["message"]
    assert store.corrections() == []


@pytest.mark.unit
def test_the_ui_server_refuses_feedback_over_the_size_limit_before_reading_it(store):
    """Only the headers are sent: the answer comes before any of the body is read."""
    with pad_server(NOWHERE, feedback=store) as pad:
        connection = http.client.HTTPConnection(*pad.server_address[:2], timeout=10)
        connection.putrequest("POST", "/api/feedback", skip_host=True)
        connection.putheader("Host", "127.0.0.1")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(C.MAX_REQUEST_BYTES * 2))
        connection.endheaders()
        response = connection.getresponse()
        status, answer = response.status, json.loads(response.read())
        connection.close()
    assert status == 413 and "feedback too large" in answer["message"]


@pytest.mark.unit
def test_the_ui_servers_metrics_count_corrections_per_version_label_and_verdict(store):
    store.add(seven(), 7, {"digit": 1, "version": "1.0"})
    store.add(seven(), 7, {"digit": 1, "version": "1.0"})
    store.add(seven(), 7, {"digit": 7, "version": "2.0"})
    with pad_server(NOWHERE, feedback=store) as pad:
        request = urllib.request.Request(f"{pad.url}metrics", headers={"Host": "127.0.0.1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            kind, text = response.headers["Content-Type"], response.read().decode()
    assert kind.startswith("text/plain; version=0.0.4")
    assert 'mnist_kit_feedback_total{model_version="1.0",label="7",wrong="true"} 2' in text.splitlines()
    assert 'mnist_kit_feedback_total{model_version="2.0",label="7",wrong="false"} 1' in text.splitlines()


@pytest.mark.unit
def test_metrics_without_a_database_publish_no_series_and_create_none(tmp_path):
    store = Store(tmp_path / C.FEEDBACK_DB)
    assert "mnist_kit_feedback_total{" not in store.prometheus()
    assert not (tmp_path / C.FEEDBACK_DB).exists()
