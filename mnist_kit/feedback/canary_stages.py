"""`mnist-kit canary run`: a candidate version taken through stages on a live kserve runtime (a shadow, then a growing
share of the requests), each passed only when its gates hold, then promoted; rolled back at the first gate that
fails, or when the time allowed runs out before a stage's gates could be judged.

The gates read `canary.status()`: a candidate is never judged on figures too few to say anything ("waiting", not a
pass). Every decision is printed and recorded in feedback.db with its figures, and a verdict on the labelled
disagreements that a decision acts on is recorded as a look, as `ab` records its verdicts, so a run that looks again
at the same images tests at the next look's level.
"""

import json
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.feedback import canary
from mnist_kit.serving import client

SHADOW = "shadow"
STAGES = (SHADOW, 10, 50, 100)

PASS, FAIL, WAIT, NOT_REACHED = "pass", "fail", "waiting", "not reached"


class CanaryRunError(KitError):
    """Stages that cannot be run: the message says what is wrong with them."""


@dataclass(frozen=True)
class Gate:
    """One gate's state (PASS, FAIL, WAIT, or NOT_REACHED: a verdict not required and not reached), why, and the
    figures it was judged on."""

    name: str
    state: str
    why: str
    figures: dict = field(default_factory=dict)


@dataclass
class Plan:
    """What a run does: the candidate, its stages, how long each dwells and the whole may take, what it reads."""

    candidate: str
    stages: tuple = STAGES
    dwell_s: float = C.CANARY_DWELL_S
    max_s: float = 60 * C.CANARY_MAX_MINUTES
    poll_s: float = C.CANARY_POLL_S
    require_labels: bool = False
    url: str = C.INFERENCE_URL
    model: str = C.MODEL_NAME
    token: str | None = None
    db: str | None = None  # shadow.db
    feedback_db: str | None = None
    alpha: float = C.AB_ALPHA
    mnist_pairs: list | None = None  # the per-digit guard, run once at the shadow stage
    cluster: str | None = None  # an InferenceService whose kubectl commands each decision carries


def stages_of(text: str) -> tuple:
    """ "shadow,10,50,100" → ("shadow", 10, 50, 100): a shadow first if at all, then shares in percent, rising."""
    stages = tuple(s if s == SHADOW else int(s) if s.isdigit() else s for s in text.replace(" ", "").split(","))
    shares = [s for s in stages if s != SHADOW]
    if not stages or SHADOW in stages[1:] or not all(isinstance(s, int) and 0 < s <= 100 for s in shares):
        raise CanaryRunError(f"stages {text!r}: shadow first, if at all, then percentages of requests, 1 to 100")
    if shares != sorted(set(shares)):
        raise CanaryRunError(f"stages {text!r}: each share of the requests above the one before")
    return stages


def stage_name(stage) -> str:
    return SHADOW if stage == SHADOW else f"{stage} %"


def role_of(stage) -> str:
    """The role the candidate's requests count under at a stage."""
    return SHADOW if stage == SHADOW else "canary"


# The gates: pure functions of status() dicts, `before` read as the stage began and `now`.


def error_gate(before: dict, now: dict, role: str) -> Gate:
    """The candidate's 5xx share of its requests in this stage against the default's since the runtime started."""
    was = before["candidate"]["by_role"].get(role, {})
    mine = {c: n - was.get(c, 0) for c, n in now["candidate"]["by_role"].get(role, {}).items()}
    theirs = now["default"]["by_role"]["default"]
    asked, baseline = sum(mine.values()), sum(theirs.values())
    figures = {"candidate_requests": asked, "candidate_5xx": mine.get("5xx", 0), "default_requests": baseline}
    figures["default_5xx"] = theirs.get("5xx", 0)
    if asked < C.CANARY_MIN_REQUESTS or baseline < C.CANARY_MIN_REQUESTS:
        why = f"{asked:.0f} of the candidate's requests as a {role} in this stage and {baseline:.0f} of the default's"
        return Gate("errors", WAIT, f"{why}, need {C.CANARY_MIN_REQUESTS} each", figures)
    mine_rate, their_rate = figures["candidate_5xx"] / asked, figures["default_5xx"] / baseline
    figures.update(candidate_rate=round(mine_rate, 6), default_rate=round(their_rate, 6), margin=C.CANARY_ERROR_MARGIN)
    said = f"5xx {100 * mine_rate:.2f} % of the candidate's requests, {100 * their_rate:.2f} % of the default's"
    if mine_rate > their_rate + C.CANARY_ERROR_MARGIN:
        return Gate("errors", FAIL, f"{said}: more than {100 * C.CANARY_ERROR_MARGIN:g} point above", figures)
    return Gate("errors", PASS, f"{said}: within {100 * C.CANARY_ERROR_MARGIN:g} point", figures)


def latency_gate(now: dict) -> Gate:
    """The candidate's p99 against C.CANARY_P99_FACTOR × the default's, each from its own answers' histogram."""
    mine, theirs = now["candidate"]["latency"], now["default"]["latency"]
    figures = {"candidate_p99_ms": mine["p99_ms"], "default_p99_ms": theirs["p99_ms"], "factor": C.CANARY_P99_FACTOR}
    figures.update(candidate_answers=mine["observations"], default_answers=theirs["observations"])
    if min(mine["observations"], theirs["observations"]) < C.CANARY_MIN_LATENCIES:
        why = (
            f"{mine['observations']:.0f} timed answers of the candidate and {theirs['observations']:.0f} of the default"
        )
        return Gate("p99", WAIT, f"{why}, need {C.CANARY_MIN_LATENCIES} each", figures)
    said = f"p99 {mine['p99_ms']:.3f} ms, the default's {theirs['p99_ms']:.3f} ms"
    if mine["p99_ms"] > C.CANARY_P99_FACTOR * theirs["p99_ms"]:
        return Gate("p99", FAIL, f"{said}: more than {C.CANARY_P99_FACTOR:g} ×", figures)
    return Gate("p99", PASS, f"{said}: within {C.CANARY_P99_FACTOR:g} ×", figures)


def flags_gate(now: dict) -> Gate:
    """Each flag's share of the candidate's pictures against its share of the default's. A shift past the margin is
    a model reading the traffic differently: only the labels can say whether better, so it waits for a verdict,
    passes on "candidate better", and fails on any other."""
    mine, theirs = now["candidate"], now["default"]
    figures = {
        "candidate_pictures": mine["pictures"],
        "default_pictures": theirs["pictures"],
        "margin": C.CANARY_FLAG_MARGIN,
    }
    if min(mine["pictures"], theirs["pictures"]) < C.CANARY_MIN_PICTURES:
        why = f"{mine['pictures']:.0f} pictures read by the candidate and {theirs['pictures']:.0f} by the default"
        return Gate("flags", WAIT, f"{why}, need {C.CANARY_MIN_PICTURES} each", figures)
    shifts = {flag: round(mine["flag_shares"][flag] - theirs["flag_shares"][flag], 4) for flag in C.FLAGS}
    figures["shifts"] = shifts
    moved = {flag: shift for flag, shift in shifts.items() if abs(shift) > C.CANARY_FLAG_MARGIN}
    if not moved:
        within = f"every flag's share within {100 * C.CANARY_FLAG_MARGIN:g} points of the default's"
        return Gate("flags", PASS, within, figures)
    said = ", ".join(f"{flag} {100 * shift:+.1f} points" for flag, shift in moved.items())
    said = f"{said} on the candidate, more than {100 * C.CANARY_FLAG_MARGIN:g} off"
    verdict = now["verdict"]
    if verdict == "candidate better":
        return Gate("flags", PASS, f"{said}: a candidate reading the labelled disagreements better", figures)
    if verdict.startswith("too few labels"):
        return Gate("flags", WAIT, f"{said}: the labels decide, {verdict}", figures)
    return Gate("flags", FAIL, f"{said}, unexplained by the labels: {verdict}", figures)


def verdict_gate(now: dict, *, require_labels: bool) -> Gate:
    """McNemar's verdict on the labelled disagreements, where they suffice: "default better" fails."""
    labels, said = now["labels"], now["verdict"]
    figures = {"labelled": labels["labelled"], "verdict": said, "mcnemar_p": now["mcnemar_p"]}
    figures.update(look=now["look"], alpha=now["alpha"])
    if said.startswith("too few labels"):
        if require_labels:
            return Gate("verdict", WAIT, f"{said}: label the shadow's disagreements (--require-labels)", figures)
        return Gate("verdict", NOT_REACHED, f"{said}: not required (--require-labels requires it)", figures)
    at = f"p = {now['mcnemar_p']:.3g} at look {now['look']}'s level {now['alpha']:.3g}"
    return Gate("verdict", FAIL if said == "default better" else PASS, f"{said} ({at})", figures)


def mnist_gate(guard: dict) -> Gate:
    """canary.mnist_guard's answer: no digit of MNIST's test set read worse by more than its margin."""
    figures = {k: guard[k] for k in ("images", "margin", "digits_lost", "mcnemar_p")}
    if guard["passed"]:
        return Gate("mnist", PASS, f"no digit more than {guard['margin']} points below the default", figures)
    lost = "; ".join(f"the {d['digit']}s {d['a']:.2f} % → {d['b']:.2f} %" for d in guard["digits_lost"])
    return Gate("mnist", FAIL, f"MNIST test images: {lost}, more than {guard['margin']} points lost", figures)


def gates(stage, before: dict, now: dict, *, require_labels: bool, guard: dict | None = None) -> list[Gate]:
    """A stage's gates: a shadow answers nobody, so its latency is not the candidate's to judge."""
    found = [error_gate(before, now, role_of(stage))]
    if stage != SHADOW:
        found.append(latency_gate(now))
    found += [flags_gate(now), verdict_gate(now, require_labels=require_labels)]
    return found + ([mnist_gate(guard)] if guard is not None else [])


# The cluster: KServe splits a Serverless InferenceService's traffic by canaryTrafficPercent.


def cluster_command(name: str, percent: int) -> str:
    patch = json.dumps({"spec": {"predictor": {"canaryTrafficPercent": percent}}}, separators=(",", ":"))
    return f"kubectl patch isvc {name} --type merge -p '{patch}'"


def cluster_step(name: str, stage, decision: str = "stage") -> str:
    """What a stage or a decision is on a cluster: KServe mirrors no traffic (kserve#2240), so the shadow stage is
    the new revision at 0 %; a share is that percent; promoted is 100; rolled back, 0 (the last revision's)."""
    if decision == "promoted":
        return cluster_command(name, 100)
    if decision == "rolled back" or stage == SHADOW:
        return cluster_command(name, 0)
    return cluster_command(name, stage)


# The run.


def change(plan: Plan, path: str, method: str = "PUT") -> None:
    """One change of the runtime's routing (routes.py's management writes)."""
    url = f"{plan.url.rstrip('/')}/models/{plan.model}/{plan.candidate}/{path}"
    try:
        client.request(url, b"" if method == "PUT" else None, method, token=plan.token, timeout=30)
    except client.ClientError as e:
        raise CanaryRunError(f"{method} {url}: {e}") from None


def route(plan: Plan, stage) -> None:
    mode, share = (SHADOW, 1.0) if stage == SHADOW else ("canary", stage / 100)
    change(plan, f"candidate?mode={mode}&share={share:g}")


class Run:
    """One run of a plan against the runtime: `decide` prints (`say`) and records each decision; `clock` and
    `sleep` are time's, unless a test's."""

    def __init__(self, plan: Plan, *, say=lambda decision: None, clock=time.monotonic, sleep=time.sleep):
        self.plan, self.say, self.clock, self.sleep = plan, say, clock, sleep
        self.decisions, self.default = [], None

    def status(self) -> dict:
        p = self.plan
        return canary.status(
            p.candidate, url=p.url, db=p.db, feedback_db=p.feedback_db, model=p.model, token=p.token, alpha=p.alpha
        )

    def decide(self, stage, decision: str, reason: str, *, found=()) -> dict:
        """One decision, with its gates' figures: printed, recorded in feedback.db, kept."""
        figures = {"gates": [asdict(gate) for gate in found]}
        if self.plan.cluster:
            figures["cluster"] = cluster_step(self.plan.cluster, stage, decision)
        made = {"time": time.time(), "default": self.default, "candidate": self.plan.candidate}
        made.update(stage=stage_name(stage), decision=decision, reason=reason, figures=figures)
        with closing(feedback_store(self.plan)) as store:
            store.record_decision(made)
        self.decisions.append(made)
        self.say(made)
        return made

    def run(self) -> dict:
        """Every stage in turn, then promoted; the first failing or expired stage rolls back. The last decision."""
        open_store(self.plan.db)
        first = self.status()
        self.default, deadline = first["default"]["version"], self.clock() + self.plan.max_s
        stage = self.plan.stages[0]
        try:
            for stage in self.plan.stages:
                route(self.plan, stage)
                ended = self.stage(stage, deadline)
                if ended is not None:
                    return ended
        except BaseException as e:  # a failure or ^C half-way leaves no candidate answering
            self.stopped(stage, e)
            raise
        change(self.plan, "set-default")
        return self.decide(stage, "promoted", f"every stage passed: {self.candidate_is()}")

    def stopped(self, stage, error: BaseException) -> None:
        try:
            change(self.plan, "candidate", "DELETE")
        except KitError as failed:
            self.decide(stage, "stopped", f"the run stopped ({error!r}); the candidate could not be removed: {failed}")
        else:
            self.decide(stage, "rolled back", f"the run stopped ({error!r}); {self.default} stays the default")

    def candidate_is(self) -> str:
        return f"{self.plan.candidate} is the default, {self.default} no longer answers requests naming no version"

    def stage(self, stage, deadline: float) -> dict | None:
        """Poll one stage's gates until they pass and it dwelt long enough (None), or one fails or the time ends
        (rolled back: that decision)."""
        started, before, said = self.clock(), self.status(), None
        guard = None
        if stage == SHADOW and self.plan.mnist_pairs is not None:
            p = self.plan
            guard = canary.mnist_guard(p.mnist_pairs, self.default, p.candidate, url=p.url, token=p.token)
        while True:
            now = self.status()
            found = gates(stage, before, now, require_labels=self.plan.require_labels, guard=guard)
            failed = [gate for gate in found if gate.state == FAIL]
            waiting = [gate for gate in found if gate.state == WAIT]
            if failed:
                self.record_look(now)
                return self.roll_back(stage, "; ".join(f"{g.name}: {g.why}" for g in failed), found)
            if not waiting and self.clock() - started >= self.plan.dwell_s:
                self.record_look(now)
                self.decide(stage, "passed", passed(found), found=found)
                return None
            missing = "; ".join(f"{g.name}: {g.why}" for g in waiting) or f"the stage's {self.plan.dwell_s:g} s"
            if self.clock() >= deadline:
                return self.roll_back(
                    stage, f"the time ran out before this stage's gates passed; missing {missing}", found
                )
            if waiting and [g.name for g in waiting] != said:  # said when what it waits for changes, not each poll
                said = [g.name for g in waiting]
                self.decide(stage, "waiting", missing, found=found)
            self.sleep(self.plan.poll_s)

    def roll_back(self, stage, reason: str, found) -> dict:
        change(self.plan, "candidate", "DELETE")
        return self.decide(stage, "rolled back", f"{reason}; {self.default} stays the default", found=found)

    def record_look(self, now: dict) -> None:
        """A decision (a stage passed, or rolled back) made while a verdict was reached acted on it, through the
        verdict gate or the flags gate: a look at those labelled images, recorded as `ab` records its verdicts, so
        the next look is tested at its own, smaller, level."""
        if now["verdict"].startswith("too few labels"):
            return
        p = self.plan
        feedback_db = p.feedback_db or canary.default_feedback_db()
        trained = canary.trained_on(feedback_db)
        _, digests = canary.labelled(p.db or canary.default_store(), self.default, p.candidate, trained=trained)
        with closing(feedback_store(p)) as store:
            store.record_verdict(
                SHADOW,
                digests,
                versions=(self.default, p.candidate),
                look=now["look"],
                alpha=now["alpha"],
                p=now["mcnemar_p"],
                verdict=now["verdict"],
            )


def passed(found) -> str:
    held = ", ".join(g.name for g in found if g.state == PASS)
    return "; ".join([f"{held} held"] + [f"{g.name} {g.state}: {g.why}" for g in found if g.state == NOT_REACHED])


def open_store(path) -> None:
    """shadow.db as the shadow stage writes it: created empty where no disagreement came yet (no labels, not no
    status)."""
    from mnist_kit.serving.kserve.disagreements import DisagreementStore

    DisagreementStore(path or canary.default_store()).close()


def feedback_store(plan: Plan):
    from mnist_kit.feedback.store import Store

    return Store(plan.feedback_db or canary.default_feedback_db())


def line(decision: dict) -> str:
    """A decision as `canary run` prints it: the stage, what was decided and why, then each gate."""
    lines = [f"[{decision['stage']}] {decision['decision']}: {decision['reason']}"]
    lines += [f"    {g['name']:8} {g['state']:12} {g['why']}" for g in decision["figures"]["gates"]]
    if "cluster" in decision["figures"]:
        lines.append(f"    cluster: {decision['figures']['cluster']}")
    return "\n".join(lines)
