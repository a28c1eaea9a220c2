"""`mnist-kit ab`: two served versions on the same labelled images, McNemar's exact test, a verdict that claims no
difference it has not shown, and a promotion that happens only when B is better and not worse on MNIST."""

import io
import json
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from harness import TorchServe, in_thread, recording_server, send_json
from PIL import Image, ImageDraw

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback import ab
from mnist_kit.feedback.store import Store
from mnist_kit.files import sha256
from mnist_kit.packaging import archive
from mnist_kit.serving import client
from mnist_kit.serving.processes import free_port
from mnist_kit.serving.torchserve import config


@pytest.mark.unit
def test_mcnemars_exact_test_is_the_two_sided_binomial_on_discordant_pairs():
    assert ab.mcnemar(0, 0) == 1.0
    assert ab.mcnemar(10, 0) == ab.mcnemar(0, 10) == pytest.approx(2 / 2**10)
    assert ab.mcnemar(5, 5) == 1.0
    assert ab.mcnemar(44, 7) < 1e-6


def side(version: str, correct: list[bool]) -> ab.Side:
    return ab.Side(version, correct=correct, confidence=[0.9] * len(correct), ms=[1.0] * len(correct))


@pytest.mark.unit
def test_a_verdict_needs_a_significant_split_and_enough_images():
    same = ab.compare(side("1.0", [True] * 300), side("2.0", [True] * 300), a_only=0, b_only=0)
    assert same["verdict"] == "no difference shown" and same["mcnemar_p"] == 1.0
    few = ab.compare(side("1.0", [False] * 20), side("2.0", [True] * 20), a_only=0, b_only=20)
    assert few["verdict"].startswith("too few images for a verdict")
    worse = ab.compare(side("1.0", [True] * 300), side("2.0", [False] * 20 + [True] * 280), a_only=20, b_only=0)
    assert worse["verdict"] == "B worse"


@pytest.mark.unit
def test_promotion_needs_b_better_here_and_within_the_margin_on_mnist():
    no_errors = {"a": {"errors": 0}, "b": {"errors": 0}}
    better = {"verdict": "B better", "mcnemar_p": 1e-5, **no_errors}
    digits = {"per_digit": {str(d): 99.4 for d in range(10)}}
    even = {
        "a": {"accuracy": 99.4, "errors": 0, **digits},
        "b": {"accuracy": 99.35, "errors": 0, **digits},
        "verdict": "no difference shown",
    }
    assert ab.promotion(better, even)[0]
    assert not ab.promotion({"verdict": "no difference shown", "mcnemar_p": 0.5}, even)[0]
    dropped = {"a": {"accuracy": 99.4, "errors": 0}, "b": {"accuracy": 99.1, "errors": 0}, "verdict": "B worse"}
    allowed, why = ab.promotion(better, dropped)
    assert not allowed and "loses 0.30 points on MNIST's test set" in why


@pytest.mark.unit
def test_a_b_with_more_errors_than_a_is_not_promoted_even_when_it_reads_better():
    better = {"verdict": "B better", "mcnemar_p": 1e-5, "a": {"errors": 0}, "b": {"errors": 3}}
    even = {
        "a": {"accuracy": 99.4, "errors": 0},
        "b": {"accuracy": 99.4, "errors": 0},
        "verdict": "no difference shown",
    }
    allowed, why = ab.promotion(better, even)
    assert not allowed and why.startswith("B answered 3 images with an error, A 0")


class TwoVersions(BaseHTTPRequestHandler):
    """/predictions/mnist/VERSION for image i (its two bytes): 1.0 misreads every 20th image (i % 20 == 1); 2.0
    reads every image right but answers every 20th (i % 20 == 0) with a 400."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        i, label = body[0] * 256 + body[1], body[2]
        if self.path.endswith("/2.0") and i % 20 == 0:
            status, answer = 400, {"code": 400, "type": "BadRequestException", "message": "not a decodable image"}
        else:
            wrong = self.path.endswith("/1.0") and i % 20 == 1
            status, answer = 200, {"digit": (label + 1) % 10 if wrong else label, "confidence": 0.9}
        send_json(self, status, answer)

    def log_message(self, *args):
        pass


@pytest.mark.unit
def test_errors_count_as_wrong_answers_in_the_paired_test_so_refusing_images_wins_nothing():
    """B refuses 5 % of the images, A misreads another 5 %: otherwise equal, they are not told apart, each side
    counts every image, and B is not promoted."""
    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), TwoVersions)) as server:
        pairs = [(bytes([i // 256, i % 256, i % 10]), i % 10) for i in range(400)]
        result = ab.run(pairs, "1.0", "2.0", url=f"http://127.0.0.1:{server.server_address[1]}")
    assert result["paired_images"] == 400 and result["a"]["images"] == result["b"]["images"] == 400
    assert result["only_a_right"] == result["only_b_right"] == 20 and result["verdict"] == "no difference shown"
    assert result["a"]["accuracy"] == result["b"]["accuracy"] == 95.0 and result["b"]["errors"] == 20
    assert not ab.promotion(result, result)[0]


@contextmanager
def misreading(misreads: dict):
    """A server whose versions read image i (its index in two bytes, its digit in a third) right, except where
    misreads[version](i, digit) gives the digit that version answers instead."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            i, label = body[0] * 256 + body[1], body[2]
            misread = misreads.get(self.path.rsplit("/", 1)[-1], lambda i, label: None)
            answer = misread(i, label)
            send_json(self, 200, {"digit": label if answer is None else answer, "confidence": 0.9})

        def log_message(self, *args):
            pass

    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


# 500 coded images, 50 of each digit: image i is a picture of i % 10, the (i // 10)-th of its digit.
CODED = [(bytes([i // 256, i % 256, i % 10]), i % 10) for i in range(500)]
BETTER_ON_THE_SET = {"verdict": "B better", "mcnemar_p": 1e-5, "a": {"errors": 0}, "b": {"errors": 0}}


def fours_as_nines(share: int):
    """A misreading of the first `share` of the 50 images of a 4 as a 9."""
    return lambda i, label: 9 if label == 4 and i // 10 < share else None


def sevens_as_ones(share: int):
    """A misreading of the first `share` of the 50 images of a 7 as a 1."""
    return lambda i, label: 1 if label == 7 and i // 10 < share else None


@pytest.mark.unit
def test_a_b_that_reads_every_4_as_a_9_is_refused_and_the_paired_run_shows_it_per_digit():
    with misreading({"2.0": fours_as_nines(100)}) as url:
        result = ab.run(CODED, "1.0", "2.0", url=url)
    assert result["a"]["per_digit"] == {str(d): 100.0 for d in range(10)}
    assert result["b"]["per_digit"] == {**{str(d): 100.0 for d in range(10)}, "4": 0.0}
    assert ab.digits_lost(result) == [{"digit": 4, "a": 100.0, "b": 0.0, "drop": 100.0}]
    allowed, why = ab.promotion(BETTER_ON_THE_SET, result)
    assert not allowed and why.startswith("B loses 10.00 points on MNIST's test set")  # the total rule, first


@pytest.mark.unit
def test_a_b_that_misreads_a_few_of_one_digit_is_refused_though_its_total_does_not_move():
    """B misreads 3 of the 50 4s as 9s and reads right the 3 7s A misreads: the totals are equal (99.4 % each),
    within the 0.1 points allowed, and McNemar sees 3 against 3; the 4s lose 6 points, more than the 1 allowed."""
    with misreading({"1.0": sevens_as_ones(3), "2.0": fours_as_nines(3)}) as url:
        result = ab.run(CODED, "1.0", "2.0", url=url)
    assert result["a"]["accuracy"] == result["b"]["accuracy"] == 99.4
    assert result["verdict"] == "no difference shown"
    allowed, why = ab.promotion(BETTER_ON_THE_SET, result)
    assert not allowed
    assert why == (
        f"B loses more than the {C.PROMOTION_DIGIT_MARGIN} points allowed per digit on MNIST's test set: "
        "the 4s 100.00 % (A) → 94.00 % (B)"
    )


@pytest.mark.unit
def test_a_b_that_loses_no_digit_passes_the_per_digit_guard():
    """B reads right the 7s A misreads, and misreads nothing: no digit is read worse, and it is promoted."""
    with misreading({"1.0": sevens_as_ones(3)}) as url:
        result = ab.run(CODED, "1.0", "2.0", url=url)
    assert result["b"]["per_digit"]["7"] == 100.0 and result["a"]["per_digit"]["7"] == 94.0
    assert ab.digits_lost(result) == []
    assert ab.promotion(BETTER_ON_THE_SET, result)[0]


def promote_on_coded_mnist(monkeypatch, home, url, *args):
    """`ab --set mnist --promote`, MNIST's test set being the coded images (B better on them by construction)."""
    monkeypatch.setattr(ab, "labelled_images", lambda which, **kwargs: CODED)
    env = {C.HOME_ENV: str(home)}
    argv = ["ab", "--a", "1.0", "--b", "2.0", "--url", url, "--set", "mnist", "--promote", *args]
    return CliRunner().invoke(cli, argv, env=env)


def misreads_30_sevens_against_6_fours():
    """A misreads 30 of the 7s, B 6 of the 4s: B better in all (p ~ 1e-4), and 12 points worse on the 4s."""
    return misreading({"1.0": sevens_as_ones(30), "2.0": fours_as_nines(6)})


@pytest.mark.unit
def test_ab_promote_refused_by_the_guard_prints_each_digits_accuracy_of_a_and_b(monkeypatch, tmp_path):
    with misreads_30_sevens_against_6_fours() as url:
        result = promote_on_coded_mnist(monkeypatch, tmp_path, url)
    assert result.exit_code == 0, result.output
    assert "verdict: B better" in result.output
    assert (
        "not promoted: B loses more than the 1.0 points allowed per digit on MNIST's test set: the 4s" in result.output
    )
    assert "MNIST's test set, per digit        A         B" in result.output
    assert "  4                         100.00 %   88.00 %  lost 12.00 points" in result.output
    assert "  7                          40.00 %  100.00 %\n" in result.output


@pytest.mark.unit
def test_ab_promote_json_names_the_digits_the_guard_refused_with_both_accuracies(monkeypatch, tmp_path):
    with misreads_30_sevens_against_6_fours() as url:
        result = promote_on_coded_mnist(monkeypatch, tmp_path, url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["promotion"]["promoted"] is False
    assert report["promotion"]["digits_lost"] == [{"digit": 4, "a": 100.0, "b": 88.0, "drop": 12.0}]
    assert report["mnist"]["a"]["per_digit"]["7"] == 40.0 and report["mnist"]["b"]["per_digit"]["4"] == 88.0


@pytest.fixture
def recorder():
    with recording_server() as server:
        yield server


def distinct_pngs(count: int) -> list[bytes]:
    """`count` different digit pictures (different bytes, so different content hashes)."""
    pictures = []
    for i in range(count):
        image = Image.new("L", (28, 28))
        ImageDraw.Draw(image).line([(8 + i % 10, 4), (14, 24)], fill=135 + i, width=3)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    assert len(set(pictures)) == count
    return pictures


def ab_cli(home, url, *args):
    env = {C.HOME_ENV: str(home)}
    return CliRunner().invoke(cli, ["ab", "--a", "1.0", "--b", "2.0", "--url", url, *args], env=env)


@pytest.mark.unit
def test_ab_on_a_folder_leaves_out_every_image_a_recorded_fine_tune_trained_on(recorder, tmp_path):
    pictures = distinct_pngs(12)
    for i, data in enumerate(pictures):
        (tmp_path / f"{i % 10}-{i:03d}.png").write_bytes(data)
    store = Store(tmp_path / C.FEEDBACK_DB)
    first = store.start_finetune("a.pt", [(sha256(pictures[i]), "x") for i in (0, 1, 2)])
    store.start_finetune("b.pt", [(sha256(pictures[i]), "y") for i in (2, 3)])
    store.finish_finetune(first, "f" * 64)
    result = ab_cli(tmp_path, recorder.url, "--set", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["left_out"] == {"trained on by fine-tune 1, 2": 4} and report["paired_images"] == 8
    assert sorted(set(recorder.seen)) == sorted(sha256(data) for data in pictures[4:])


@pytest.mark.unit
def test_ab_refuses_when_a_fine_tune_of_the_checkpoints_is_not_recorded(recorder, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    metrics = {"init": "checkpoints/mnist_sd.20260101-000000.pt", "feedback": {"trained_ids": [1, 2]}}
    (tmp_path / "checkpoints" / "metrics.json").write_text(json.dumps(metrics))
    Store(tmp_path / C.FEEDBACK_DB).add(distinct_pngs(1)[0], 3)
    result = ab_cli(tmp_path, recorder.url, "--set", "feedback")
    assert result.exit_code == 1 and recorder.seen == []
    assert "records a fine-tune that" in result.output and "has no record of" in result.output


@pytest.mark.unit
def test_each_look_at_the_same_images_is_counted_and_tested_at_a_smaller_level(recorder, tmp_path):
    """alpha / (k (k+1)) at the k-th verdict on the same images: 0.01 / 2, then 0.01 / 6; --fresh then finds none."""
    folder = tmp_path / "set"
    folder.mkdir()
    for i, data in enumerate(distinct_pngs(120)):
        (folder / f"{i % 10}-{i:03d}.png").write_bytes(data)
    reports = []
    for _ in range(2):
        result = ab_cli(tmp_path, recorder.url, "--set", str(folder), "--json")
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output[result.output.index("{") :]))
    assert [r["look"] for r in reports] == [1, 2] and [r["verdict"] for r in reports] == ["no difference shown"] * 2
    assert reports[0]["alpha"] == pytest.approx(0.01 / 2) and reports[1]["alpha"] == pytest.approx(0.01 / 6)
    printed = ab_cli(tmp_path, recorder.url, "--set", str(folder))
    assert "look 3 at these images (2 earlier verdicts on any of them)" in printed.output
    fresh = ab_cli(tmp_path, recorder.url, "--set", str(folder), "--fresh")
    assert fresh.exit_code == 1 and "120 given on in an earlier verdict (--fresh)" in fresh.output


@pytest.fixture(scope="module")
def versions(tiny_checkpoint, untrained_checkpoint, tmp_path_factory):
    """TorchServe with three versions: 1.0 and 2.0 the same tiny model, 3.0 untrained (random weights)."""
    store = tmp_path_factory.mktemp("ab_store")
    archive.build(tiny_checkpoint, store, mode="eager")
    archive.build(tiny_checkpoint, store, version="2.0", mode="eager")
    archive.build(untrained_checkpoint, store, version="3.0", mode="eager")
    with TorchServe(store, load_models="mnist.mar,mnist-2.0.mar,mnist-3.0.mar") as ts:
        yield ts


def run_ab(ts, home, *args) -> dict:
    url = ["--url", ts.inference_url, "--management-url", ts.management_url]
    args = ["ab", *url, "--set", "mnist", "--limit", "200", "--json", *args]
    result = CliRunner().invoke(cli, args, env={C.HOME_ENV: str(home)})
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def default_version(ts) -> str:
    return client.described(ts.management_url, C.MODEL_NAME)[0]["modelVersion"]


def test_two_equal_versions_get_no_verdict_of_a_difference_and_no_promotion(versions, data_dir, tmp_path):
    report = run_ab(versions, tmp_path, "--a", "1.0", "--b", "2.0", "--data-dir", str(data_dir), "--promote")
    assert report["paired_images"] == 200 and report["only_a_right"] == report["only_b_right"] == 0
    assert report["verdict"] == "no difference shown" and report["a"]["accuracy"] == report["b"]["accuracy"]
    assert report["promotion"]["promoted"] is False
    assert default_version(versions) == "1.0"


def test_a_worse_version_is_called_worse_and_promote_refuses_it(versions, data_dir, tmp_path):
    plot = tmp_path / "ab.png"
    args = ["--a", "1.0", "--b", "3.0", "--data-dir", str(data_dir), "--promote", "--plot", str(plot)]
    report = run_ab(versions, tmp_path, *args)
    assert report["verdict"] == "B worse" and report["mcnemar_p"] < 0.01
    assert report["b"]["accuracy"] < report["a"]["accuracy"] - 20
    assert set(report["promotion"]) == {"promoted", "why", "digits_lost"} and not report["promotion"]["promoted"]
    assert report["promotion"]["why"].startswith("B is not shown better on this set (B worse")
    assert default_version(versions) == "1.0" and plot.read_bytes()[:4] == b"\x89PNG"


def test_ab_prints_each_versions_figures_the_test_and_the_verdict(versions, data_dir, tmp_path):
    url = ["--url", versions.inference_url, "--management-url", versions.management_url]
    args = ["ab", *url, "--set", "mnist", "--limit", "120", "--a", "1.0", "--b", "3.0", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cli, args, env={C.HOME_ENV: str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "A/B on mnist: 120 images, each to both versions" in result.output
    assert "McNemar's exact test: p = " in result.output and "verdict: B worse" in result.output


def test_serve_models_loads_versions_side_by_side_the_first_the_default(tiny_checkpoint, tmp_path):
    store = tmp_path / "store"
    archive.build(tiny_checkpoint, store, mode="eager")
    archive.build(tiny_checkpoint, store, version="2.0", mode="eager")
    (tmp_path / "tmp").mkdir()
    ports = {"inference_port": free_port(), "management_port": free_port()}
    text = config.properties(
        "local",
        **ports,
        metrics_port=free_port(),
        grpc_ports=(free_port(), free_port()),
        model_store=store,
        initial_worker_port=free_port(),
    )
    (tmp_path / "config.properties").write_text(text)
    env = {C.HOME_ENV: str(tmp_path), "TMPDIR": str(tmp_path / "tmp"), "TEMP": str(tmp_path / "tmp")}
    started = CliRunner().invoke(cli, ["serve", "--models", "mnist.mar,mnist-2.0.mar"], env=env)
    try:
        assert started.exit_code == 0, started.output
        management_url = f"http://127.0.0.1:{ports['management_port']}"
        described = CliRunner().invoke(cli, ["models", "--url", management_url, "describe", "mnist"], env=env)
        assert described.output.startswith("mnist 1.0 (default): mnist.mar")
        assert "mnist 2.0: mnist-2.0.mar" in described.output
    finally:
        CliRunner().invoke(cli, ["stop"], env=env)


@pytest.mark.unit
def test_serve_models_names_an_archive_the_store_lacks(tmp_path):
    (tmp_path / "model_store").mkdir()
    (tmp_path / "model_store" / "mnist.mar").write_bytes(b"")
    (tmp_path / "config.properties").write_text(config.properties("local", inference_port=free_port()))
    env = {C.HOME_ENV: str(tmp_path), "TMPDIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["serve", "--models", "mnist.mar,mnist-2.0.mar"], env=env)
    assert result.exit_code == 1 and "has no mnist-2.0.mar" in result.output


@pytest.mark.unit
def test_promote_is_refused_when_b_is_on_another_server():
    args = ["ab", "--a", "1.0", "--b", "2.0", "--url-b", "http://127.0.0.1:1", "--promote"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "with --url-b, B is another server" in result.output
