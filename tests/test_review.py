"""The review queue of `mnist-kit ui` (/review): a shadow's disagreements from shadow.db, one at a time with both
versions' answers, labelled with a key or a click through the pad's loopback server, the labels landing in the store.

No model server is needed: the queue reads shadow.db alone, filled here with the example digits as a shadow keeps
them (DisagreementStore.add). The page is driven in Debian's chromium by Playwright, as tests/test_ui.py does.
"""

import base64
import http.client
import io
import json

import numpy as np
import pytest
from conftest import DIGITS
from harness import in_thread
from PIL import Image
from playwright.sync_api import expect

from mnist_kit import constants as C
from mnist_kit.feedback.store import Store
from mnist_kit.serving.kserve.disagreements import NOT_A_DIGIT, DisagreementStore
from mnist_kit.serving.processes import free_port
from mnist_kit.ui.pad_client import Reader
from mnist_kit.ui.server import PadServer
from mnist_kit.worker import preprocess

pytestmark = pytest.mark.unit


def answer(digit, confidence, *flags) -> dict:
    return {"digit": digit, "confidence": confidence, "flags": list(flags)}


def disagree(store, digit: int, shadow_read, **sent) -> int:
    """Keep the example `digit` as a disagreement: 1.0 read it right, 2.0 read `shadow_read`."""
    fields = {"image": DIGITS[digit].read_bytes(), "content_type": "image/png", **sent}
    return store.add(
        fields.pop("image"),
        **fields,
        default_version="1.0",
        default_answer=answer(digit, 0.98),
        shadow_version="2.0",
        shadow_answer=answer(shadow_read, 0.61, "low_confidence"),
    )


@pytest.fixture
def shadow_db(tmp_path):
    return tmp_path / C.SHADOW_DB


@pytest.fixture
def store(shadow_db):
    """shadow.db with three disagreements, the 7 the oldest and the 4 the newest."""
    store = DisagreementStore(shadow_db)
    for digit, read in ((7, 1), (3, 8), (4, 9)):
        disagree(store, digit, read)
    yield store
    store.close()


@pytest.fixture
def pad(tmp_path, shadow_db):
    """`mnist-kit ui`'s server in a thread, reviewing `shadow_db`; no model server behind it."""
    reader = Reader(f"http://{C.HOST}:{free_port()}", C.MODEL_NAME, "")
    with in_thread(PadServer(reader, port=0, feedback=Store(tmp_path / C.FEEDBACK_DB), shadow=shadow_db)) as server:
        yield server


def call(server, path, *, method="GET", body=None, kind=None, host=None):
    """One request to the pad's server: (status, content type, body: JSON decoded where it is JSON)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    headers = {"Content-Type": kind} if kind else {}
    if host:
        headers["Host"] = host
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data, content_type = response.read(), response.getheader("Content-Type")
    connection.close()
    return response.status, content_type, json.loads(data) if content_type == "application/json" else data


def label(server, disagreement, value, kind="application/json"):
    return call(server, f"/api/disagreements/{disagreement}/label", method="POST", body=json.dumps(value), kind=kind)


def ids(store) -> list[int]:
    return [d.id for d in store.list()]


# ---- the endpoints -------------------------------------------------------------------------------------------


def test_the_queue_lists_the_unlabelled_newest_first_with_both_answers_and_the_counts(pad, store):
    seven, three, four = ids(store)[::-1]
    store.label(three, 3)
    status, _, body = call(pad, "/api/disagreements")
    assert status == 200 and body["message"] == ""
    assert [d["id"] for d in body["disagreements"]] == [four, seven]
    newest = body["disagreements"][0]
    assert newest["default"] == {"version": "1.0", **answer(4, 0.98)}
    assert newest["shadow"] == {"version": "2.0", **answer(9, 0.61, "low_confidence")}
    assert newest["image"] == f"/api/disagreements/{four}/image" and newest["shown"] == "as sent"
    assert (newest["content_type"], newest["bytes"]) == ("image/png", len(DIGITS[4].read_bytes()))
    assert body["stats"] == store.stats() and body["stats"]["unlabelled"] == 2


def test_the_counts_have_an_endpoint_of_their_own(pad, store):
    status, _, body = call(pad, "/api/disagreements/stats")
    assert status == 200 and body == {"store": str(store.path), "exists": True, "stats": store.stats()}


def test_a_picture_is_served_as_the_bytes_sent_with_its_image_type(pad, store):
    newest = ids(store)[0]
    assert call(pad, f"/api/disagreements/{newest}/image") == (200, "image/png", DIGITS[4].read_bytes())


def test_a_picture_sent_under_another_content_type_is_served_as_what_its_bytes_are(pad, store):
    """A client's header could say text/html: the page's own origin never serves a sender's bytes as a document."""
    claimed = disagree(store, 5, 6, content_type="text/html")
    assert call(pad, f"/api/disagreements/{claimed}/image") == (200, "image/png", DIGITS[5].read_bytes())


def test_a_json_requests_picture_is_the_28x28_the_model_read(pad, store):
    """A KServe v1 body is no image a browser shows: the page gets the picture the serving core reads of it."""
    v1 = json.dumps({"instances": [{"data": base64.b64encode(DIGITS[2].read_bytes()).decode()}]}).encode()
    sent = disagree(store, 2, 7, image=v1, content_type="application/json")
    [listed] = [d for d in call(pad, "/api/disagreements")[2]["disagreements"] if d["id"] == sent]
    assert listed["shown"] == "model input"
    status, kind, png = call(pad, f"/api/disagreements/{sent}/image")
    assert (status, kind) == (200, "image/png")
    seen = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(seen, preprocess.read_image(DIGITS[2].read_bytes()).pixels)


def test_a_label_lands_in_the_store_and_the_answer_gives_the_counts_after_it(pad, store, shadow_db):
    seven, three, _ = ids(store)[::-1]
    status, _, body = label(pad, seven, {"label": 7})
    assert status == 200 and body["message"] == f"disagreement {seven} is a 7"
    assert body["stats"]["labelled"] == 1 and body["stats"]["unlabelled"] == 2
    assert label(pad, three, {"label": "not-a-digit"})[2]["label"] == "not-a-digit"
    stored = DisagreementStore(shadow_db)
    assert {d.id: d.label for d in stored.list() if d.label is not None} == {seven: 7, three: NOT_A_DIGIT}
    stored.close()


@pytest.mark.parametrize("value", [10, -1, "7", 3.0, True, None, "not a digit"])
def test_a_bad_label_is_a_400_naming_the_labels_there_are(pad, store, value):
    status, _, body = label(pad, ids(store)[0], {"label": value})
    assert status == 400
    assert body["message"] == f'label must be a digit 0 to 9 or "not-a-digit", not {json.dumps(value)}'
    assert store.stats()["labelled"] == 0


def test_a_label_that_is_no_object_is_a_400_showing_one(pad, store):
    message = 'send an object: {"label": 7} or {"label": "not-a-digit"}'
    assert label(pad, ids(store)[0], [7]) == (400, "application/json", {"message": message})


def test_a_label_not_sent_as_json_is_a_415(pad, store):
    status, _, body = label(pad, ids(store)[0], {"label": 7}, kind="application/x-www-form-urlencoded")
    assert (status, body["message"]) == (
        415,
        "send the label as application/json, not 'application/x-www-form-urlencoded'",
    )


def test_an_unknown_disagreement_is_a_404_for_its_label_and_its_picture(pad, store, shadow_db):
    message = f"no disagreement 99 in {shadow_db}: never stored, or evicted"
    assert label(pad, 99, {"label": 7}) == (404, "application/json", {"message": message})
    assert call(pad, "/api/disagreements/99/image") == (404, "application/json", {"message": message})


def test_without_a_shadow_db_the_queue_is_empty_says_how_disagreements_arise_and_creates_none(pad, shadow_db):
    status, _, body = call(pad, "/api/disagreements")
    assert status == 200 and body["disagreements"] == [] and body["exists"] is False
    assert body["stats"] == {"stored": 0, "labelled": 0, "unlabelled": 0, "evicted": 0, "bytes": 0}
    assert f"Nothing to review: there is no {shadow_db}." in body["message"]
    assert "mnist-kit serve --runtime kserve --models mnist.mar,mnist-2.0.mar --shadow 2.0" in body["message"]
    assert call(pad, "/api/disagreements/stats")[2]["exists"] is False
    assert label(pad, 1, {"label": 7})[:2] == (404, "application/json")
    assert call(pad, "/api/disagreements/1/image")[0] == 404
    assert not list(shadow_db.parent.glob(f"{C.SHADOW_DB}*"))


def test_a_shadow_db_with_no_disagreement_yet_says_the_versions_agreed_so_far(pad, shadow_db):
    DisagreementStore(shadow_db).close()
    body = call(pad, "/api/disagreements")[2]
    assert body["disagreements"] == [] and body["exists"] is True
    assert (
        body["message"]
        == f"Nothing to review yet: the two versions have read every picture alike ({shadow_db} is empty)."
    )


def test_the_review_endpoints_answer_requests_to_localhost_only(pad, store):
    """A page of another site reaching 127.0.0.1 through DNS rebinding names its own host: refused, as the pad's."""
    for path, method in (("/api/disagreements", "GET"), (f"/api/disagreements/{ids(store)[0]}/label", "POST")):
        body = json.dumps({"label": 7}) if method == "POST" else None
        status, _, said = call(pad, path, method=method, body=body, kind="application/json", host="evil.example")
        assert (status, said["message"]) == (403, "the pad answers requests to 127.0.0.1 or localhost only")
    assert store.stats()["labelled"] == 0


# ---- the page ------------------------------------------------------------------------------------------------


@pytest.fixture
def review_page(browser, pad):
    """The review page of `pad`, opened; a script error on it fails the test."""
    page, errors = browser.new_page(viewport={"width": 1000, "height": 720}), []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(pad.url + "review")
    yield page
    page.close()
    assert not errors


def shown_id(page) -> int:
    return int(page.get_by_test_id("picture").get_attribute("data-id"))


def test_the_page_shows_the_newest_picture_large_with_both_answers_and_what_is_left(store, review_page):
    newest = ids(store)[0]
    expect(review_page.get_by_test_id("left")).to_have_text("3 left to label (0 labelled).")
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(newest))
    expect(review_page.get_by_test_id("default-version")).to_have_text("1.0 (default) read it as")
    expect(review_page.get_by_test_id("default-answer")).to_have_text("4 (98 %)")
    expect(review_page.get_by_test_id("shadow-version")).to_have_text("2.0 (shadow) read it as")
    expect(review_page.get_by_test_id("shadow-answer")).to_have_text("9 (61 %) low confidence")
    expect(review_page.get_by_test_id("picture")).to_have_js_property("naturalWidth", 28)  # loaded
    box = review_page.get_by_test_id("picture").bounding_box()
    assert box["width"] >= 300 and box["height"] >= 300  # the 28×28 drawn large


def test_a_key_labels_the_picture_shown_and_the_next_one_follows(store, review_page):
    four, three, seven = ids(store)
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(four))
    review_page.keyboard.press("4")
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(three))
    expect(review_page.get_by_test_id("left")).to_have_text("2 left to label (1 labelled).")
    expect(review_page.get_by_test_id("message")).to_have_text(f"Labelled: disagreement {four} is a 4.")
    review_page.keyboard.press("n")
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(seven))
    assert {d.id: d.label for d in store.list()} == {four: 4, three: NOT_A_DIGIT, seven: None}


def test_a_click_labels_the_picture_shown_and_the_next_one_follows(store, review_page):
    four, three, seven = ids(store)
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(four))
    review_page.get_by_test_id("label-9").click()
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(three))
    review_page.get_by_test_id("not-a-digit").click()
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(seven))
    expect(review_page.get_by_test_id("left")).to_have_text("1 left to label (2 labelled).")
    assert {d.id: d.label for d in store.list()} == {four: 9, three: NOT_A_DIGIT, seven: None}


def test_skipping_shows_the_next_and_the_skipped_one_comes_back_after_the_others(store, review_page):
    four, three, seven = ids(store)
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(four))
    review_page.keyboard.press("s")
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(three))
    review_page.get_by_test_id("skip").click()
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(seven))
    review_page.keyboard.press("7")
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(four))
    expect(review_page.get_by_test_id("left")).to_have_text("2 left to label (1 labelled).")
    assert {d.id: d.label for d in store.list()} == {four: None, three: None, seven: 7}


def test_once_all_are_labelled_the_page_says_there_is_nothing_to_review(store, review_page):
    expect(review_page.get_by_test_id("picture")).to_have_attribute("data-id", str(ids(store)[0]))
    for digit, left in zip("437", (2, 1, 0)):
        review_page.keyboard.press(digit)
        expect(review_page.get_by_test_id("left")).to_have_text(f"{left} left to label ({3 - left} labelled).")
    expect(review_page.get_by_test_id("empty")).to_contain_text("Nothing to review: every disagreement in")
    expect(review_page.get_by_test_id("review")).to_be_hidden()
    assert store.stats()["unlabelled"] == 0


def test_without_a_shadow_db_the_page_says_how_disagreements_arise(review_page, shadow_db):
    expect(review_page.get_by_test_id("empty")).to_contain_text(f"Nothing to review: there is no {shadow_db}.")
    expect(review_page.get_by_test_id("empty")).to_contain_text("--shadow 2.0")
    expect(review_page.get_by_test_id("left")).to_have_text("0 left to label (0 labelled).")
    review_page.keyboard.press("7")  # nothing to label: no request, no file
    assert not shadow_db.exists()
