"""The serving runtime's alerts, as Prometheus rules: every window and `for:` a multiple of the evaluation interval, so
the same rules run at 30 s in production and at 1 s in a test, and fire after the same number of evaluations.

Each rule says why its window and wait are what they are (`why`, written above it in rules.yml); the thresholds are
in constants.py. Descriptions carry the figure; each runbook_url points at the alert's section of docs/MONITORING.md.
"""

import re
import textwrap
from dataclasses import dataclass

from mnist_kit import constants as C
from mnist_kit.deploy.resources import DeployError

RUNBOOKS = "docs/MONITORING.md"
# The jobs of prometheus.yml (and the ServiceMonitor's relabelled job): the runtimes' /metrics, and the pad's.
JOB, PAD_JOB = "mnist-kit", "mnist-kit-pad"
FLAGS_WATCHED = ("not_a_digit", "several_digits")  # low_confidence is the model's doubt, not the input's
UNITS = {"h": 3600, "m": 60, "s": 1}


def seconds(interval: str) -> int:
    """A Prometheus duration of whole seconds, minutes or hours ("30s", "1m") as seconds; refuses anything else."""
    found = re.fullmatch(r"([1-9][0-9]*)([smh])", interval.strip())
    if not found:
        raise DeployError(f"--interval {interval!r}: a whole number of seconds, minutes or hours, as 30s, 1m or 1h")
    return int(found[1]) * UNITS[found[2]]


def duration(total_s: float) -> str:
    """Seconds as Prometheus writes a duration: 3600 → 1h, 90 → 90s, 0.5 → 500ms, 0 → 0s."""
    if total_s != int(total_s):
        return f"{round(total_s * 1000)}ms"
    total_s = int(total_s)
    for unit, size in UNITS.items():
        if total_s and total_s % size == 0:
            return f"{total_s // size}{unit}"
    return "0s"


@dataclass(frozen=True)
class Alert:
    """One alerting rule; `<w>` in its expression and texts is its window."""

    name: str
    expr: str
    window: int  # in evaluation intervals
    wait: int  # `for:`, in evaluation intervals
    severity: str
    summary: str
    description: str
    why: str

    def rule(self, interval_s: int, runbooks: str = RUNBOOKS) -> dict:
        window = duration(self.window * interval_s)
        return {
            "alert": self.name,
            "expr": self.expr.replace("<w>", window),
            "for": duration(self.wait * interval_s),
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary.replace("<w>", window),
                "description": self.description.replace("<w>", window),
                "runbook_url": f"{runbooks}#{self.name.lower()}",
            },
        }


# <w> is the rule's window. PromQL and Go templates are written as Prometheus reads them; f-strings double braces.
ALERTS = [
    Alert(
        "MnistKitTargetDown",
        f'up{{job="{JOB}"}} == 0',
        window=1,
        wait=2,
        severity="critical",
        summary="The runtime at {{ $labels.instance }} is down",
        description="Prometheus could not scrape {{ $labels.instance }} ({{ $labels.job }}) at three evaluations "
        "in a row: it is down, or its /metrics does not answer.",
        why="Down at three evaluations in a row (for: 2 intervals): one lost scrape is a slow answer or a "
        "restart's second, not an outage.",
    ),
    Alert(
        "MnistKitPadDown",
        f'up{{job="{PAD_JOB}"}} == 0',
        window=1,
        wait=2,
        severity="warning",
        summary="The pad at {{ $labels.instance }} is down",
        description="Prometheus could not scrape the pad at {{ $labels.instance }} at three evaluations in a row: "
        "its corrections are not counted, and MnistKitCorrectionsSayWrong cannot fire.",
        why="As the runtime's, down at three evaluations; a warning: nobody's answers depend on the pad.",
    ),
    Alert(
        "MnistKitErrorRate",
        'sum by (version, role) (rate(mnist_kit_requests_total{role!="shadow", status_class="5xx"}[<w>]))\n'
        '  / sum by (version, role) (rate(mnist_kit_requests_total{role!="shadow"}[<w>]))\n'
        f"  > {C.MONITORING_ERROR_SHARE}\n"
        'and sum by (version, role) (increase(mnist_kit_requests_total{role!="shadow"}[<w>]))'
        f" >= {C.MONITORING_MIN_COUNT}",
        window=10,
        wait=4,
        severity="critical",
        summary="Version {{ $labels.version }} ({{ $labels.role }}) answers 5xx",
        description="{{ $value | humanizePercentage }} of the requests version {{ $labels.version }} answered as "
        "{{ $labels.role }} over the last <w> were 5xx (a 4xx is the request's own fault, a shadow answers nobody); "
        f"the alert starts above {C.MONITORING_ERROR_SHARE:.0%}.",
        why="The share over 10 intervals, of at least MONITORING_MIN_COUNT requests, held for 4 more: one pod "
        "restarting fails a few requests at once, which the target and restart alerts name; a version that keeps "
        "failing is what this one is for.",
    ),
    Alert(
        "MnistKitSlowAnswers",
        "histogram_quantile(0.99, sum by (version, le) (rate(mnist_kit_request_seconds_bucket[<w>])))\n"
        f"  > {C.MONITORING_P99_S}\n"
        'and sum by (version) (increase(mnist_kit_request_seconds_bucket{le="+Inf"}[<w>]))'
        f" >= {C.MONITORING_MIN_COUNT}",
        window=10,
        wait=4,
        severity="warning",
        summary="Version {{ $labels.version }} answers slowly",
        description="The p99 of version {{ $labels.version }}'s answers over the last <w> was "
        "{{ $value | humanizeDuration }}, from arrival at its batcher to its answer; the alert starts above "
        f"{C.MONITORING_P99_S * 1000:.0f}ms.",
        why="A p99 needs a hundred answers and more (fewer, and it is the slowest one): 10 intervals, held for 4 "
        "more, so that a burst that queues for seconds is not an alert but a runtime that stays behind is.",
    ),
    Alert(
        "MnistKitFlagSurge",
        f'sum by (version, role, flag) (rate(mnist_kit_flags_total{{role!="shadow", flag=~"{"|".join(FLAGS_WATCHED)}"}}'
        "[<w>]))\n"
        '  / ignoring (flag) group_left sum by (version, role) (rate(mnist_kit_pictures_total{role!="shadow"}[<w>]))\n'
        f"  > {C.MONITORING_FLAG_SHARE}\n"
        'and on (version, role) sum by (version, role) (increase(mnist_kit_pictures_total{role!="shadow"}[<w>]))'
        f" >= {C.MONITORING_MIN_PICTURES}",
        window=2,
        wait=0,
        severity="warning",
        summary="Version {{ $labels.version }} flags many pictures {{ $labels.flag }}",
        description="{{ $value | humanizePercentage }} of the pictures version {{ $labels.version }} read as "
        "{{ $labels.role }} over the last <w> carried {{ $labels.flag }}; the alert starts above "
        f"{C.MONITORING_FLAG_SHARE:.0%} (on real digits, at most 4%).",
        why="A surge is news only while it lasts: a short window (2 intervals: four or five scrapes), no wait beyond "
        "it, so it fires at the first evaluation after the first flagged scrape, within two intervals of the "
        "burst's start (one held interval more took 2.2 s at 1 s in the monitoring drill); the least pictures "
        "keep a quiet minute's two blanks from being a 100 % share.",
    ),
    Alert(
        "MnistKitInputDrift",
        f"max by (version, statistic) (mnist_kit_drift_psi) > {C.MONITORING_DRIFT_PSI}\n"
        "and on (version) max by (version) (mnist_kit_drift_window_pictures)"
        f" >= {C.MONITORING_MIN_COUNT}",
        window=1,
        wait=4,
        severity="warning",
        summary="The pictures sent to version {{ $labels.version }} drifted ({{ $labels.statistic }})",
        description="The population stability index of {{ $labels.statistic }} between the pictures version "
        '{{ $labels.version }} reads now and its reference is {{ printf "%.2f" $value }}; above '
        f"{C.MONITORING_DRIFT_PSI} the population has changed.",
        why="The runtime computes the index over its own window of pictures: a gauge, no rate. It must stay above "
        "the line for 4 intervals (five readings) over at least MONITORING_MIN_COUNT pictures: one odd batch moves "
        "one reading, a new kind of traffic moves them all.",
    ),
    Alert(
        "MnistKitCorrectionsSayWrong",
        'sum by (model_version) (increase(mnist_kit_feedback_total{wrong="true"}[<w>]))'
        f" >= {C.MONITORING_WRONG_CORRECTIONS}",
        window=120,
        wait=1,
        severity="warning",
        summary="Users say version {{ $labels.model_version }} answers wrong",
        description='{{ printf "%.0f" $value }} corrections from the pads over the last <w> said version '
        f"{{{{ $labels.model_version }}}} answered wrong; the alert starts at {C.MONITORING_WRONG_CORRECTIONS}.",
        why="Corrections come from people, a few an hour: a count over 120 intervals (an hour at 30 s), held one "
        "more; a share would need the pads' own traffic, which the pads do not count.",
    ),
    Alert(
        "MnistKitShadowDisagrees",
        "sum by (default_version, shadow_version) (rate(mnist_kit_shadow_disagreements_total[<w>]))\n"
        "  / sum by (default_version, shadow_version) (rate(mnist_kit_shadow_comparisons_total[<w>]))\n"
        f"  > {C.MONITORING_DISAGREEMENT_SHARE}\n"
        "and sum by (default_version, shadow_version) (increase(mnist_kit_shadow_comparisons_total[<w>]))"
        f" >= {C.MONITORING_MIN_COUNT}",
        window=10,
        wait=4,
        severity="warning",
        summary="Shadow {{ $labels.shadow_version }} disagrees with {{ $labels.default_version }}",
        description="Shadow version {{ $labels.shadow_version }} read {{ $value | humanizePercentage }} of the "
        "pictures it compared over the last <w> otherwise than the default {{ $labels.default_version }}; the alert "
        f"starts above {C.MONITORING_DISAGREEMENT_SHARE:.0%}.",
        why="A shadow answers nobody, so nothing is urgent: the share over 10 intervals of at least "
        "MONITORING_MIN_COUNT comparisons, held for 4 more, before anyone looks at its disagreements.",
    ),
    Alert(
        "MnistKitWorkerRestarts",
        "sum by (instance, reason) (increase(mnist_kit_worker_restarts_total[<w>])) > 0",
        window=20,
        wait=0,
        severity="warning",
        summary="Workers of {{ $labels.instance }} restarted ({{ $labels.reason }})",
        description='{{ printf "%.0f" $value }} worker restarts ({{ $labels.reason }}) on {{ $labels.instance }} '
        "over the last <w>.",
        why="A restart is an event, not a state: nothing to wait out (for: 0s); the 20-interval window keeps it "
        "firing for 20 intervals after, and counts the restarts of a loop together.",
    ),
]


def rules(interval_s: int, runbooks: str = RUNBOOKS) -> dict:
    """rules.yml's document: one group, evaluated every interval."""
    return {
        "groups": [
            {
                "name": "mnist-kit",
                "interval": duration(interval_s),
                "rules": [alert.rule(interval_s, runbooks) for alert in ALERTS],
            }
        ]
    }


def commented(rules_yaml: str) -> str:
    """rules.yml's text with each rule's `why` as a comment above it."""
    for alert in ALERTS:
        lines = "".join(f"  # {line}\n" for line in textwrap.wrap(alert.why, 110))
        rules_yaml = rules_yaml.replace(f"  - alert: {alert.name}\n", f"{lines}  - alert: {alert.name}\n", 1)
    return rules_yaml
