"""The shadow's disagreements: kept with the bytes as sent and both answers, bounded by a cap (the oldest out first,
counted), labelled by id or by image, written by several processes into one file without a row lost, queued by a
server worker's writer that never blocks; listed and labelled by `mnist-kit shadow`."""

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import DIGITS

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.files import sha256
from mnist_kit.serving.kserve.disagreements import (
    NOT_A_DIGIT,
    SCHEMA_VERSION,
    DisagreementStore,
    DisagreementWriter,
    ShadowStoreError,
)

pytestmark = pytest.mark.unit


def picture(digit: int) -> bytes:
    return DIGITS[digit].read_bytes()


def answers(default: int, shadow: int) -> dict:
    """What add and submit take besides the image: the default read `default`, the shadow `shadow`."""
    return {
        "content_type": "image/png",
        "default_version": "1.0",
        "default_answer": {"digit": default, "confidence": 0.98, "flags": []},
        "shadow_version": "2.0",
        "shadow_answer": {"digit": shadow, "confidence": 0.61, "flags": ["low_confidence"]},
    }


@pytest.fixture
def store(tmp_path):
    store = DisagreementStore(tmp_path / C.SHADOW_DB)
    yield store
    store.close()


def test_a_disagreement_is_kept_with_the_bytes_as_sent_and_both_answers(store):
    first = store.add(picture(7), **answers(7, 1), created=1000.0)
    second = store.add(picture(3), **answers(3, 8))
    newest, oldest = store.list()
    assert (newest.id, oldest.id) == (second, first)
    assert oldest.image == picture(7) and oldest.sha256 == sha256(picture(7)) and oldest.created == 1000.0
    assert (oldest.content_type, oldest.default_version, oldest.shadow_version) == ("image/png", "1.0", "2.0")
    assert oldest.default_answer == answers(7, 1)["default_answer"]
    assert oldest.shadow_answer == answers(7, 1)["shadow_answer"] and oldest.label is None


def test_the_cap_evicts_the_oldest_first_counts_them_and_keeps_the_images_under_it(tmp_path):
    images = [picture(d % 10) for d in range(30)]
    cap = sum(map(len, images[-10:]))  # room for the last ten exactly
    store = DisagreementStore(tmp_path / C.SHADOW_DB, max_bytes=cap)
    ids = [store.add(image, **answers(d % 10, 0)) for d, image in enumerate(images)]
    assert [d.id for d in store.list()] == ids[::-1][:10]
    stats = store.stats()
    assert (stats["stored"], stats["evicted"]) == (10, 20)
    store.close()
    [(kept,)] = sqlite3.connect(tmp_path / C.SHADOW_DB).execute("SELECT SUM(length(image)) FROM disagreements")
    assert kept == stats["bytes"] <= cap


def test_a_label_is_kept_and_unlabelled_lists_only_those_without_one(store):
    seven, blot = store.add(picture(7), **answers(7, 1)), store.add(picture(0), **answers(0, 6))
    three = store.add(picture(3), **answers(3, 8))
    store.label(seven, 7)
    store.label(blot, NOT_A_DIGIT)
    assert {d.id: d.label for d in store.list()} == {seven: 7, blot: NOT_A_DIGIT, three: None}
    assert [d.id for d in store.list(unlabelled=True)] == [three]
    assert store.stats()["labelled"] == 2 and store.stats()["unlabelled"] == 1


def test_a_correction_of_the_same_image_labels_every_disagreement_on_it(store):
    twice = [store.add(picture(4), **answers(4, 9)) for _ in range(2)]
    other = store.add(picture(5), **answers(5, 6))
    assert store.label_image(sha256(picture(4)), 4) == 2
    assert {d.id: d.label for d in store.list()} == {twice[0]: 4, twice[1]: 4, other: None}


def test_a_bad_label_or_an_unknown_id_is_a_clear_error(store):
    kept = store.add(picture(7), **answers(7, 1))
    for label in (11, -1, True, "7", 7.0):
        with pytest.raises(ShadowStoreError, match="label must be a digit 0 to 9 or 10 \\(not a digit\\)"):
            store.label(kept, label)
    with pytest.raises(ShadowStoreError, match="no disagreement 99 in .*: never stored, or evicted"):
        store.label(99, 7)
    assert store.list()[0].label is None


def test_a_database_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / C.SHADOW_DB
    DisagreementStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(ShadowStoreError, match="newer than this kit's"):
        DisagreementStore(path)


def test_two_processes_writing_one_file_at_once_lose_no_row(tmp_path):
    """Two replicas (or workers) on one folder: both create the file and write into it at the same time."""
    path, go = tmp_path / C.SHADOW_DB, tmp_path / "go"
    writer = textwrap.dedent(f"""
        import os, sys, time
        from mnist_kit.serving.kserve.disagreements import DisagreementStore
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        store = DisagreementStore({str(path)!r})
        for n in range(200):
            store.add(sys.argv[1].encode() * 100, content_type="image/png", default_version="1.0",
                      default_answer={{"digit": 1}}, shadow_version="2.0", shadow_answer={{"digit": n % 10}})
    """)
    replicas = [subprocess.Popen([sys.executable, "-c", writer, name], stdout=subprocess.PIPE) for name in "ab"]
    assert [replica.stdout.readline() for replica in replicas] == [b"ready\n"] * 2
    go.touch()  # both waiting: they open (and create) the file and write at the same time
    assert [replica.wait(timeout=120) for replica in replicas] == [0, 0]
    store = DisagreementStore(path)
    kept = store.list()
    assert len(kept) == 400 and len({d.id for d in kept}) == 400
    assert sorted({d.image[:1] for d in kept}) == [b"a", b"b"] and store.stats()["bytes"] == 400 * 100
    store.close()


def test_the_writer_never_blocks_and_counts_what_it_drops_when_its_queue_is_full(tmp_path):
    writer = DisagreementWriter(tmp_path / C.SHADOW_DB, max_pending=10)
    disk, slow_add = threading.Event(), writer.store.add
    writer.store.add = lambda *args, **kwargs: disk.wait() and slow_add(*args, **kwargs)  # a disk that hangs
    started = time.perf_counter()
    accepted = [writer.submit(picture(7), **answers(7, 1)) for _ in range(15)]
    assert time.perf_counter() - started < 0.5  # no submit waited on the disk
    assert accepted == [True] * 10 + [False] * 5 and writer.dropped == 5 and writer.written == 0
    disk.set()
    assert writer.flush() and writer.written == 10 and writer.store.stats()["stored"] == 10
    writer.close()


def test_the_writer_writes_in_the_order_received(tmp_path):
    writer = DisagreementWriter(tmp_path / C.SHADOW_DB)
    for digit in range(10):
        assert writer.submit(picture(digit), **answers(digit, (digit + 1) % 10))
    assert writer.flush()
    assert [d.default_answer["digit"] for d in reversed(writer.store.list())] == list(range(10))
    writer.close()


def shadow(*args, db) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["shadow", "--db", str(db), *args])
    return result.exit_code, result.output


def test_shadow_list_shows_each_disagreement_newest_first_and_the_counts(tmp_path, store):
    store.add(picture(7), **answers(7, 1), created=0.0)
    store.label(store.add(picture(3), **answers(3, 8)), 3)
    code, output = shadow("list", db=store.path)
    assert code == 0
    newest, oldest, counts = output.splitlines()
    assert newest.split()[0] == "2" and "1.0 → 3 (98 %)" in newest and "2.0 → 8 (61 %)" in newest
    assert newest.endswith("  3") and oldest.split()[0] == "1" and oldest.endswith("unlabelled")
    assert counts.startswith(f"2 kept in {store.path}: 1 labelled, 1 unlabelled; 0 evicted;")


def test_shadow_list_json_names_each_image_by_sha256_and_size_without_its_bytes(store):
    kept = store.add(picture(7), **answers(7, 1))
    code, output = shadow("list", "--json", "--unlabelled", db=store.path)
    report = json.loads(output)
    assert code == 0 and report["stats"] == store.stats()
    [row] = report["disagreements"]
    assert row["id"] == kept and row["sha256"] == sha256(picture(7)) and row["bytes"] == len(picture(7))
    assert row["default_answer"]["digit"] == 7 and row["shadow_answer"]["digit"] == 1 and row["label"] is None
    assert "image" not in row


def test_shadow_label_takes_a_digit_or_not_a_digit(store):
    seven, blot = store.add(picture(7), **answers(7, 1)), store.add(picture(0), **answers(0, 6))
    assert shadow("label", str(seven), "7", db=store.path) == (0, f"disagreement {seven} is a 7\n")
    code, output = shadow("label", str(blot), "not-a-digit", "--json", db=store.path)
    assert code == 0 and json.loads(output)["label"] == "not-a-digit"
    assert {d.id: d.label for d in store.list()} == {seven: 7, blot: NOT_A_DIGIT}
    code, output = shadow("list", "--json", db=store.path)
    assert [row["label"] for row in json.loads(output)["disagreements"]] == ["not-a-digit", 7]


def test_shadow_label_refuses_a_bad_digit_naming_the_choices_and_an_unknown_id_in_one_line(store):
    kept = store.add(picture(7), **answers(7, 1))
    code, output = shadow("label", str(kept), "none", db=store.path)
    assert code == 2 and "'none' is not one of '0', '1'" in output and "'9', 'not-a-digit'" in output
    code, output = shadow("label", "99", "7", db=store.path)
    assert code == 1 and output == f"Error: no disagreement 99 in {store.path}: never stored, or evicted\n"


def test_shadow_export_writes_the_labelled_images_as_train_extra_reads_them(tmp_path, store):
    store.label(store.add(picture(7), **answers(7, 1)), 7)
    store.label(store.add(picture(0), **answers(0, 6)), NOT_A_DIGIT)
    store.add(picture(3), **answers(3, 8))
    code, output = shadow("export", str(tmp_path / "out"), db=store.path)
    assert code == 0 and output == f"exported 2 labelled disagreements to {tmp_path / 'out'}\n"
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["7-000001.png", "not-a-digit-000002.png", "shadow.csv"]
    assert (tmp_path / "out" / "7-000001.png").read_bytes() == picture(7)
