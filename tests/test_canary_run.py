"""`mnist-kit canary run`: the gates as pure functions of `canary status` reports, and the stages driven against a
fake runtime that answers /metrics from scripted figures and records every change of its routing."""

import http.server
import json
import sqlite3
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from harness import in_thread
from test_canary import fill

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback import canary_stages as stages
from mnist_kit.feedback.canary_stages import FAIL, NOT_REACHED, PASS, WAIT


def version(name, *, role="default", asked=0, fives=0, p99=1.0, timed=0, pictures=0, low=0.1):
    """One version's figures as canary.status reports them: `asked` requests in `role`, `fives` of them 5xx."""
    by_role = {r: {"2xx": 0, "4xx": 0, "5xx": 0} for r in ("default", "shadow", "canary")}
    by_role[role] = {"2xx": asked - fives, "4xx": 0, "5xx": fives}
    return {
        "version": name,
        "by_role": by_role,
        "pictures": pictures,
        "latency": {"observations": timed, "p50_ms": p99 / 2 if timed else None, "p99_ms": p99 if timed else None},
        "flag_shares": {flag: low if flag == "low_confidence" else 0.0 for flag in C.FLAGS},
    }


def report(default=None, candidate=None, *, verdict="too few labels (0, need 100)", labelled=0):
    return {
        "default": default or version("1.0", asked=1000, timed=1000, pictures=1000),
        "candidate": candidate or version("2.0"),
        "labels": {"labelled": labelled},
        "verdict": verdict,
        "mcnemar_p": 0.5,
        "look": 1,
        "alpha": 0.025,
    }


BEFORE = report()


@pytest.mark.unit
def test_the_error_gate_waits_for_enough_of_the_candidates_requests_in_its_stage():
    gate = stages.error_gate(BEFORE, report(candidate=version("2.0", role="canary", asked=40)), "canary")
    assert gate.state == WAIT and "40 of the candidate's requests as a canary in this stage" in gate.why


@pytest.mark.unit
def test_the_error_gate_fails_a_candidate_with_more_5xx_than_the_default_and_the_margin():
    now = report(candidate=version("2.0", role="canary", asked=200, fives=10))
    gate = stages.error_gate(BEFORE, now, "canary")
    assert gate.state == FAIL and gate.figures["candidate_rate"] == 0.05


@pytest.mark.unit
def test_the_error_gate_passes_a_stray_failure_within_the_margin():
    now = report(candidate=version("2.0", role="shadow", asked=200, fives=1))
    assert stages.error_gate(BEFORE, now, "shadow").state == PASS


@pytest.mark.unit
def test_the_error_gate_counts_only_the_requests_since_the_stage_began():
    before = report(candidate=version("2.0", role="canary", asked=500))
    now = report(candidate=version("2.0", role="canary", asked=550, fives=20))
    assert stages.error_gate(before, now, "canary").state == WAIT  # 50 new requests, not 550


@pytest.mark.unit
@pytest.mark.parametrize(("timed", "p99", "state"), [(50, 1.0, WAIT), (500, 1.9, PASS), (500, 2.1, FAIL)])
def test_the_p99_gate_waits_for_answers_then_allows_twice_the_defaults(timed, p99, state):
    now = report(candidate=version("2.0", role="canary", timed=timed, p99=p99))
    assert stages.latency_gate(now).state == state


@pytest.mark.unit
@pytest.mark.parametrize(("pictures", "low", "state"), [(100, 0.1, WAIT), (500, 0.14, PASS)])
def test_the_flag_gate_waits_for_pictures_then_passes_shares_within_the_margin(pictures, low, state):
    gate = stages.flags_gate(report(candidate=version("2.0", role="shadow", pictures=pictures, low=low)))
    assert gate.state == state


@pytest.mark.unit
@pytest.mark.parametrize(
    ("verdict", "state"),
    [
        ("too few labels (3, need 100)", WAIT),
        ("candidate better", PASS),
        ("no difference shown", FAIL),
        ("default better", FAIL),
    ],
)
def test_a_flag_share_shifted_past_the_margin_is_judged_by_the_labels(verdict, state):
    now = report(candidate=version("2.0", role="shadow", pictures=500, low=0.9), verdict=verdict)
    gate = stages.flags_gate(now)
    assert gate.state == state and "low_confidence +80.0 points" in gate.why


@pytest.mark.unit
@pytest.mark.parametrize(
    ("verdict", "required", "state"),
    [
        ("default better", False, FAIL),
        ("candidate better", False, PASS),
        ("no difference shown", True, PASS),
        ("too few labels (3, need 100)", True, WAIT),
        ("too few labels (3, need 100)", False, NOT_REACHED),
    ],
)
def test_the_verdict_gate_fails_only_default_better_and_waits_for_labels_only_when_required(verdict, required, state):
    assert stages.verdict_gate(report(verdict=verdict), require_labels=required).state == state


@pytest.mark.unit
def test_a_shadow_stage_has_no_latency_gate_and_a_canary_stage_has_one():
    names = {
        stage: [g.name for g in stages.gates(stage, BEFORE, BEFORE, require_labels=False)] for stage in ("shadow", 10)
    }
    assert names == {"shadow": ["errors", "flags", "verdict"], 10: ["errors", "p99", "flags", "verdict"]}


@pytest.mark.unit
@pytest.mark.parametrize("text", ["10,shadow", "50,10", "shadow,0", "shadow,150", "shadow,ten"])
def test_stages_out_of_order_or_out_of_range_are_refused(text):
    with pytest.raises(stages.CanaryRunError):
        stages.stages_of(text)


@pytest.mark.unit
def test_each_stage_and_decision_maps_onto_canary_traffic_percent():
    patch = 'kubectl patch isvc mnist --type merge -p \'{"spec":{"predictor":{"canaryTrafficPercent":%d}}}\''
    steps = [stages.cluster_step("mnist", stage) for stage in ("shadow", 10, 50)]
    steps += [stages.cluster_step("mnist", 50, "promoted"), stages.cluster_step("mnist", 50, "rolled back")]
    assert steps == [patch % 0, patch % 10, patch % 50, patch % 100, patch % 0]


class Runtime:
    """A kserve runtime's routing and figures: each /metrics read is `per_read` more requests, split by the routing
    as the runtime splits them; `fives` the 5xx share of the candidate's answers as a canary."""

    def __init__(self, *, fives=0.0, low=0.1, per_read=400):
        self.default, self.candidate, self.mode, self.share = "1.0", None, None, None
        self.fives, self.low, self.per_read = fives, low, per_read
        self.calls, self.lock = [], threading.Lock()
        self.requests = {}  # (version, role, class) → count
        self.pictures = {"1.0": 0, "2.0": 0}

    def count(self, version, role, n, fives=0.0):
        bad = round(n * fives)
        for cls, k in (("2xx", n - bad), ("5xx", bad)):
            self.requests[(version, role, cls)] = self.requests.get((version, role, cls), 0) + k
        self.pictures[version] += n - bad

    def metrics(self) -> str:
        with self.lock:
            n = self.per_read
            to_canary = round(n * self.share) if self.mode == "canary" else 0
            self.count(self.default, "default", n - to_canary)
            if self.mode == "shadow":
                self.count(self.candidate, "shadow", n)
            elif self.mode == "canary":
                self.count(self.candidate, "canary", to_canary, self.fives)
            lines = [
                f'mnist_kit_requests_total{{role="{r}",status_class="{c}",version="{v}"}} {k}'
                for (v, r, c), k in self.requests.items()
            ]
            for v, pictures in self.pictures.items():
                low = self.low if v == "2.0" else 0.1
                lines.append(f'mnist_kit_pictures_total{{role="default",version="{v}"}} {pictures}')
                lines.append(
                    f'mnist_kit_flags_total{{flag="low_confidence",role="default",version="{v}"}} {low * pictures}'
                )
                answered = sum(k for (w, r, _), k in self.requests.items() if w == v and r != "shadow")
                lines.append(f'mnist_kit_request_seconds_bucket{{le="0.001",version="{v}"}} {answered}')
                lines.append(f'mnist_kit_request_seconds_bucket{{le="+Inf",version="{v}"}} {answered}')
                lines.append(f'mnist_kit_request_seconds_count{{version="{v}"}} {answered}')
            return "\n".join(lines) + "\n"

    def all(self) -> list[dict]:
        return [{"modelVersion": v, "isDefault": v == self.default} for v in ("1.0", "2.0")]

    def change(self, method: str, path: str) -> None:
        parts = urlsplit(path)
        _, _, _, version, action = parts.path.split("/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.calls.append((method, parts.path, query))
            if action == "set-default":
                self.default = version
                if version == self.candidate:
                    self.candidate = self.mode = self.share = None
            elif method == "DELETE":
                self.candidate = self.mode = self.share = None
            else:
                self.candidate, self.mode, self.share = version, query["mode"], float(query["share"])


def handler(runtime: Runtime):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                self.reply(runtime.metrics().encode())
            else:
                self.reply(json.dumps(runtime.all()).encode())

        def do_PUT(self):
            runtime.change("PUT", self.path)
            self.reply(b"{}")

        def do_DELETE(self):
            runtime.change("DELETE", self.path)
            self.reply(b"{}")

        def reply(self, body: bytes):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def served(runtime: Runtime):
    return in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(runtime)))


def canary_run(runtime: Runtime, home, *args) -> tuple[int, list[dict]]:
    with served(runtime) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        argv = ["canary", "run", "--candidate", "2.0", "--url", url, "--dwell", "0", "--poll", "0.01", "--json"]
        argv += args
        result = CliRunner().invoke(cli, argv, env={C.HOME_ENV: str(home)})
    return result.exit_code, [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


@pytest.mark.unit
def test_a_candidate_failing_requests_is_rolled_back_at_the_first_canary_stage_and_the_default_kept(tmp_path):
    runtime = Runtime(fives=0.2)
    code, decisions = canary_run(runtime, tmp_path)
    last = decisions[-1]
    assert code == 1 and (last["stage"], last["decision"]) == ("10 %", "rolled back")
    assert "errors: 5xx 20.00 % of the candidate's requests" in last["reason"]
    assert [call[0] for call in runtime.calls] == ["PUT", "PUT", "DELETE"] and runtime.default == "1.0"
    assert runtime.candidate is None


@pytest.mark.unit
def test_a_healthy_candidate_without_labels_is_promoted_through_every_stage(tmp_path):
    runtime = Runtime()
    code, decisions = canary_run(runtime, tmp_path)
    passed = [d["stage"] for d in decisions if d["decision"] == "passed"]
    assert code == 0 and passed == ["shadow", "10 %", "50 %", "100 %"] and decisions[-1]["decision"] == "promoted"
    shares = [call[2].get("share") for call in runtime.calls if call[1].endswith("/candidate")]
    assert shares == ["1", "0.1", "0.5", "1"] and runtime.calls[-1][1] == "/models/mnist/2.0/set-default"
    assert (runtime.default, runtime.candidate) == ("2.0", None)


@pytest.mark.unit
def test_a_candidate_whose_flags_shift_waits_in_the_shadow_for_labels_and_answers_nobody(tmp_path):
    runtime = Runtime(low=0.9)
    code, decisions = canary_run(runtime, tmp_path, "--max-minutes", "0.005")
    assert code == 1 and (decisions[-1]["stage"], decisions[-1]["decision"]) == ("shadow", "rolled back")
    assert "missing flags: low_confidence +80.0 points" in decisions[-1]["reason"]
    assert all(call[2].get("mode") != "canary" for call in runtime.calls)


@pytest.mark.unit
def test_a_candidate_whose_flags_shift_without_reading_the_labels_better_is_rolled_back_in_the_shadow(tmp_path):
    fill(tmp_path / C.SHADOW_DB, candidate_right=55, default_right=50)
    code, decisions = canary_run(Runtime(low=0.9), tmp_path)
    assert code == 1 and (decisions[-1]["stage"], decisions[-1]["decision"]) == ("shadow", "rolled back")
    assert "flags: low_confidence +80.0 points" in decisions[-1]["reason"]
    assert "unexplained by the labels: no difference shown" in decisions[-1]["reason"]
    looks = sqlite3.connect(tmp_path / C.FEEDBACK_DB).execute("SELECT look, verdict FROM verdicts").fetchall()
    assert looks == [(1, "no difference shown")]


@pytest.mark.unit
def test_a_candidate_whose_flags_shift_as_it_reads_the_labels_better_is_promoted(tmp_path):
    fill(tmp_path / C.SHADOW_DB, candidate_right=90, default_right=10)
    code, decisions = canary_run(Runtime(low=0.02), tmp_path)
    assert code == 0 and decisions[-1]["decision"] == "promoted"


@pytest.mark.unit
def test_when_the_time_runs_out_waiting_for_labels_it_rolls_back_saying_what_was_missing(tmp_path):
    runtime = Runtime()
    code, decisions = canary_run(runtime, tmp_path, "--require-labels", "--max-minutes", "0.005")
    assert code == 1 and decisions[-1]["decision"] == "rolled back" and decisions[-1]["stage"] == "shadow"
    assert (
        "the time ran out before this stage's gates passed; missing verdict: too few labels" in decisions[-1]["reason"]
    )
    assert any(d["decision"] == "waiting" for d in decisions) and runtime.default == "1.0"


@pytest.mark.unit
def test_a_candidate_the_labels_show_worse_is_rolled_back_and_its_look_recorded(tmp_path):
    fill(tmp_path / C.SHADOW_DB, candidate_right=20, default_right=90)
    code, decisions = canary_run(Runtime(), tmp_path)
    assert code == 1 and "verdict: default better" in decisions[-1]["reason"]
    looks = sqlite3.connect(tmp_path / C.FEEDBACK_DB).execute("SELECT look, verdict FROM verdicts").fetchall()
    assert looks == [(1, "default better")]


@pytest.mark.unit
def test_every_decision_is_in_feedback_db_and_status_json_shows_them(tmp_path):
    runtime = Runtime(fives=0.2)
    _, decisions = canary_run(runtime, tmp_path)
    with served(runtime) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(
            cli, ["canary", "status", "--candidate", "2.0", "--url", url, "--json"], env={C.HOME_ENV: str(tmp_path)}
        )
    shown = json.loads(result.output)["decisions"]
    assert [(d["stage"], d["decision"]) for d in shown] == [(d["stage"], d["decision"]) for d in decisions]
    assert shown[-1]["figures"]["gates"][0]["figures"]["candidate_5xx"] > 0


@pytest.mark.unit
def test_with_cluster_each_decision_carries_its_kubectl_patch(tmp_path):
    _, decisions = canary_run(Runtime(), tmp_path, "--stages", "shadow,25", "--cluster", "mnist")
    made = [(d["decision"], d["figures"]["cluster"]) for d in decisions if d["decision"] != "waiting"]
    percents = [0, 25, 100]
    assert made == [(d, stages.cluster_command("mnist", p)) for d, p in zip(["passed", "passed", "promoted"], percents)]
