"""`mnist-kit canary status`: each version's figures read from the kserve runtime's /metrics, the shadow's agreement,
and the verdict on the labelled disagreements."""

import http.server
import json
import math

import pytest
from click.testing import CliRunner
from conftest import DIGITS
from harness import in_thread
from test_shadow import PICTURES, PNG, Recorder, Served, app_of, ask, figure, random_core

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback import ab, canary
from mnist_kit.packaging import archive
from mnist_kit.serving import client
from mnist_kit.serving.kserve.disagreements import NOT_A_DIGIT, DisagreementStore
from mnist_kit.serving.kserve.launcher import PrivateKServe, Shadowing
from mnist_kit.serving.kserve.shadow import Shadow

# /metrics as the runtime writes it (prometheus_client's text format): 1.0 answers, 2.0 shadows it and never answers.
METRICS = """\
# HELP mnist_kit_requests_total Requests answered, by status class (2xx, 4xx, 5xx)
# TYPE mnist_kit_requests_total counter
mnist_kit_requests_total{role="default",status_class="2xx",version="1.0"} 96.0
mnist_kit_requests_total{role="default",status_class="4xx",version="1.0"} 3.0
mnist_kit_requests_total{role="default",status_class="5xx",version="1.0"} 1.0
mnist_kit_requests_total{role="shadow",status_class="2xx",version="2.0"} 90.0
mnist_kit_requests_total{role="shadow",status_class="5xx",version="2.0"} 6.0
# HELP mnist_kit_pictures_total Pictures answered (200), or compared by a shadow
# TYPE mnist_kit_pictures_total counter
mnist_kit_pictures_total{role="default",version="1.0"} 100.0
mnist_kit_pictures_total{role="shadow",version="2.0"} 80.0
# HELP mnist_kit_flags_total Pictures counted in mnist_kit_pictures that carried each flag
# TYPE mnist_kit_flags_total counter
mnist_kit_flags_total{flag="low_confidence",role="default",version="1.0"} 5.0
mnist_kit_flags_total{flag="not_a_digit",role="default",version="1.0"} 2.0
mnist_kit_flags_total{flag="low_confidence",role="shadow",version="2.0"} 20.0
# HELP mnist_kit_request_seconds Seconds from a request's arrival at its version's batcher to its answer
# TYPE mnist_kit_request_seconds histogram
mnist_kit_request_seconds_bucket{le="0.0001",version="1.0"} 0.0
mnist_kit_request_seconds_bucket{le="0.001",version="1.0"} 40.0
mnist_kit_request_seconds_bucket{le="0.01",version="1.0"} 90.0
mnist_kit_request_seconds_bucket{le="+Inf",version="1.0"} 100.0
mnist_kit_request_seconds_count{version="1.0"} 100.0
mnist_kit_request_seconds_sum{version="1.0"} 0.31
# HELP mnist_kit_shadow_comparisons_total Pictures the shadow read beside the default
# TYPE mnist_kit_shadow_comparisons_total counter
mnist_kit_shadow_comparisons_total{default_version="1.0",shadow_version="2.0"} 80.0
# HELP mnist_kit_shadow_disagreements_total Pictures whose digit, or not_a_digit flag, differ
# TYPE mnist_kit_shadow_disagreements_total counter
mnist_kit_shadow_disagreements_total{default_version="1.0",shadow_version="2.0"} 8.0
"""


@pytest.mark.unit
def test_a_quantile_is_interpolated_inside_its_bucket_as_prometheus_does():
    buckets = [(0.001, 10.0), (0.005, 30.0), (0.01, 40.0), (math.inf, 40.0)]
    # p50: the 20th of 40 is the 10th of the 20 in (0.001, 0.005]; p99: the 39.6th, 9.6 of 10 into (0.005, 0.01].
    assert canary.quantile(0.5, buckets) == pytest.approx(0.003)
    assert canary.quantile(0.99, buckets) == pytest.approx(0.0098)


@pytest.mark.unit
def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert canary.quantile(0.99, [(0.001, 5.0), (math.inf, 10.0)]) == 0.001


@pytest.mark.unit
def test_a_histogram_without_observations_has_no_quantile():
    assert canary.quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]) is None
    assert canary.quantile(0.5, []) is None


@pytest.mark.unit
def test_the_runtimes_metrics_become_each_versions_figures_and_the_agreement():
    samples = canary.parse(METRICS)
    default, candidate = canary.version_figures(samples, "1.0"), canary.version_figures(samples, "2.0")
    assert default["requests"] == {"2xx": 96, "4xx": 3, "5xx": 1} and default["error_rate"] == 0.01
    # p50: the 50th is the 10th of the 50 in (1, 10] ms, 1 + 9 × 10 / 50; p99 lies past the last bound, 10 ms.
    assert default["latency"] == {"observations": 100, "p50_ms": 2.8, "p99_ms": 10.0}
    assert default["flag_shares"] == {"several_digits": 0.0, "not_a_digit": 0.02, "low_confidence": 0.05}
    assert candidate["roles"] == ["shadow"] and candidate["error_rate"] == 0.0625  # 6 of 96
    assert candidate["latency"] == {"observations": 0, "p50_ms": None, "p99_ms": None}
    assert candidate["flag_shares"]["low_confidence"] == 0.25
    assert canary.agreement(samples, "1.0", "2.0")["agreement_rate"] == 0.9


@pytest.fixture(scope="module")
def cores(tmp_path_factory) -> dict:
    """1.0 and 2.0 on different random weights: pictures they read with flags, and differently."""
    folder = tmp_path_factory.mktemp("versions")
    return {"1.0": random_core(folder / "1.0", "1.0", seed=0), "2.0": random_core(folder / "2.0", "2.0", seed=1)}


@pytest.mark.unit
def test_each_version_counts_the_flags_of_the_pictures_it_answers_and_those_it_shadows(cores):
    shadow = Shadow(cores["2.0"], default_version="1.0", version="2.0", writer=Recorder())
    app = app_of(Served([cores["1.0"], cores["2.0"]], shadow=shadow))
    series = [
        (v, role, flag) for v, role in (("1.0", "default"), ("2.0", "default"), ("2.0", "shadow")) for flag in C.FLAGS
    ]
    before = {s: figure("mnist_kit_flags_total", version=s[0], role=s[1], flag=s[2]) for s in series}
    replies = {  # the bare path: 1.0 answers and 2.0 shadows; then 2.0 answers the same pictures by its own path
        v: ask(app, [(path, [PNG], picture) for picture in PICTURES])
        for v, path in (("1.0", "/predictions/mnist"), ("2.0", "/predictions/mnist/2.0"))
    }
    counted = {s: figure("mnist_kit_flags_total", version=s[0], role=s[1], flag=s[2]) - before[s] for s in series}
    for v, answers in replies.items():
        flags = [flag for _, _, body in answers for flag in json.loads(body)["flags"]]
        assert {f: counted[(v, "default", f)] for f in C.FLAGS} == {f: flags.count(f) for f in C.FLAGS}
    assert all(counted[("2.0", "shadow", f)] == counted[("2.0", "default", f)] for f in C.FLAGS)
    assert sum(counted.values()) > 0


def answer(digit: int, *flags: str) -> dict:
    return {"digit": digit, "confidence": 0.9, "flags": list(flags)}


def fill(path, *, candidate_right: int, default_right: int, unlabelled: int = 0):
    """A shadow.db of disagreements of 1.0 (default) and 2.0 on 7s: each labelled 7, the one named reading 7."""
    store = DisagreementStore(path)
    for n in range(candidate_right + default_right + unlabelled):
        first, second = (answer(1), answer(7)) if n < candidate_right else (answer(7), answer(1))
        row = store.add(
            b"picture %d" % n,
            content_type="image/png",
            default_version="1.0",
            default_answer=first,
            shadow_version="2.0",
            shadow_answer=second,
        )
        if n < candidate_right + default_right:
            store.label(row, 7)
    store.close()
    return path


@pytest.mark.unit
def test_a_candidate_right_on_most_labelled_disagreements_is_better(tmp_path):
    counts, _ = canary.labelled(fill(tmp_path / "shadow.db", candidate_right=80, default_right=25), "1.0", "2.0")
    p, said = canary.verdict(counts, level=ab.look_level(C.AB_ALPHA, 1))
    assert (counts["candidate_right"], counts["default_right"], counts["labelled"]) == (80, 25, 105)
    assert p < ab.look_level(C.AB_ALPHA, 1) and said == "candidate better"


@pytest.mark.unit
def test_too_few_labelled_disagreements_give_no_verdict(tmp_path):
    store = fill(tmp_path / "shadow.db", candidate_right=40, default_right=0, unlabelled=300)
    counts, _ = canary.labelled(store, "1.0", "2.0")
    assert canary.verdict(counts, level=0.005)[1] == f"too few labels (40, need {ab.MIN_IMAGES})"


@pytest.mark.unit
def test_an_image_sent_again_counts_once_in_the_verdict(tmp_path):
    path = fill(tmp_path / "shadow.db", candidate_right=60, default_right=0)
    store = DisagreementStore(path)
    for _ in range(3):  # the first of the candidate's wins, sent three times more
        row = store.add(
            b"picture 0",
            content_type="image/png",
            default_version="1.0",
            default_answer=answer(1),
            shadow_version="2.0",
            shadow_answer=answer(7),
        )
        store.label(row, 7)
    store.close()
    counts, digests = canary.labelled(path, "1.0", "2.0")
    assert (counts["labelled"], counts["only_candidate_right"], counts["repeats_left_out"]) == (60, 60, 3)
    assert len(set(digests)) == len(digests) == 60


@pytest.mark.unit
def test_images_a_recorded_fine_tune_trained_on_are_left_out_of_the_verdict(tmp_path):
    from mnist_kit.feedback.store import Store
    from mnist_kit.files import sha256

    path = fill(tmp_path / "shadow.db", candidate_right=80, default_right=25)
    feedback = Store(tmp_path / C.FEEDBACK_DB)
    feedback.start_finetune("mnist_sd.pt", [(sha256(b"picture %d" % n), f"correction {n}") for n in range(30)])
    feedback.close()
    counts, _ = canary.labelled(path, "1.0", "2.0", trained=canary.trained_on(tmp_path / C.FEEDBACK_DB))
    assert (counts["labelled"], counts["only_candidate_right"], counts["trained_on_left_out"]) == (75, 50, 30)


@pytest.mark.unit
def test_a_picture_labelled_not_a_digit_is_read_right_by_the_version_that_flags_it():
    assert canary.read_right(answer(3, "not_a_digit"), NOT_A_DIGIT)
    assert not canary.read_right(answer(3), NOT_A_DIGIT)
    assert not canary.read_right(answer(7, "not_a_digit"), 7)


class FakeRuntime(http.server.BaseHTTPRequestHandler):
    """A kserve runtime's two reads canary status makes: the versions it serves, and /metrics."""

    def do_GET(self):
        versions = [{"modelVersion": "1.0", "isDefault": True}, {"modelVersion": "2.0", "isDefault": False}]
        pages = {"/models/mnist/all": json.dumps(versions).encode(), "/metrics": METRICS.encode()}
        body = pages.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(body or b'{"message": "not found"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def runtime():
    with in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeRuntime)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def status(*args, home) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["canary", "status", *args], env={C.HOME_ENV: str(home)})
    return result.exit_code, result.output


@pytest.mark.unit
def test_status_json_reports_both_versions_the_agreement_and_the_verdict(runtime, tmp_path):
    fill(tmp_path / C.SHADOW_DB, candidate_right=90, default_right=20)
    code, output = status("--candidate", "2.0", "--url", runtime, "--json", home=tmp_path)
    report = json.loads(output)
    assert code == 0 and report["default"]["requests"]["2xx"] == 96 and report["candidate"]["requests"]["5xx"] == 6
    assert report["shadow"]["agreement_rate"] == 0.9 and report["labels"]["labelled"] == 110
    assert (report["look"], report["look_recorded"], report["verdict"]) == (1, False, "candidate better")


@pytest.mark.unit
def test_status_prints_a_table_saying_which_latency_it_lacks(runtime, tmp_path):
    fill(tmp_path / C.SHADOW_DB, candidate_right=3, default_right=1)
    code, output = status("--candidate", "2.0", "--url", runtime, home=tmp_path)
    assert code == 0 and "not enough data" in output and "agreement 90.00 %" in output
    assert f"verdict: too few labels (4, need {ab.MIN_IMAGES})" in output


@pytest.mark.unit
def test_a_candidate_the_runtime_does_not_serve_is_refused_naming_those_it_does(runtime, tmp_path):
    code, output = status("--candidate", "3.0", "--url", runtime, home=tmp_path)
    assert code == 1 and "serves mnist 1.0, 2.0, not 3.0" in output


@pytest.mark.unit
def test_without_a_store_status_says_where_it_looked(runtime, tmp_path):
    code, output = status("--candidate", "2.0", "--url", runtime, home=tmp_path)
    assert code == 1 and f"no shadow store at {tmp_path / C.SHADOW_DB}" in output


@pytest.mark.unit
def test_without_a_runtime_status_says_none_answers(tmp_path):
    with http.server.HTTPServer(("127.0.0.1", 0), FakeRuntime) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}"
    code, output = status("--candidate", "2.0", "--url", url, home=tmp_path)
    assert code == 1 and f"no kserve runtime answers at {url}" in output


# Through the real runtime: the tiny model as 1.0, 2.0 (random weights) shadowing it.


def test_status_reads_a_real_runtimes_requests_and_agreement(model_store, untrained_checkpoint, tmp_path):
    second = archive.build(untrained_checkpoint, tmp_path, version="2.0", mode="eager")
    store = tmp_path / C.SHADOW_DB
    with PrivateKServe([model_store / "mnist.mar", second], shadow=Shadowing("2.0", store=store)) as ks:
        for i in range(30):
            client.predict(DIGITS[i % 10].read_bytes(), url=ks.inference_url)
        report = canary.status("2.0", url=ks.inference_url, db=store, feedback_db=tmp_path / "none.db")
    assert report["default"]["requests"]["2xx"] == 30 and report["candidate"]["by_role"]["shadow"]["2xx"] == 30
    shadow = report["shadow"]
    assert shadow["comparisons"] == 30 and shadow["agreement_rate"] == 1 - shadow["disagreements"] / 30
    assert report["default"]["latency"]["p50_ms"] > 0 and report["candidate"]["latency"]["p50_ms"] is None
