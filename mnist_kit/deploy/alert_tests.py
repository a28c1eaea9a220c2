"""promtool's unit tests of the alerts (rules.test.yml): each alert fired by the traffic it is for, and kept quiet
by the traffic it is not for, at any evaluation interval.

Series advance one sample an interval and eval times count intervals, so the same tests hold at 30 s and at 1 s.
The counters climb by whole numbers each interval: the shares and counts they give are exact, and the expected
annotations name them as Prometheus's templates write them ("5%", "248.5ms").
"""

import re
from dataclasses import dataclass

from mnist_kit.deploy.alerts import ALERTS, RUNBOOKS, duration


@dataclass(frozen=True)
class Case:
    """Input series (PromQL series → promtool's expanding values), and at each eval time (in intervals) the
    alerts expected firing: alert name → [(labels, the figure as the description writes it)]."""

    name: str
    series: dict[str, str]
    checks: list[tuple[int, str, list[tuple[dict, str]]]]


R = "mnist_kit_requests_total"
B = "mnist_kit_request_seconds_bucket"
P, F = "mnist_kit_pictures_total", "mnist_kit_flags_total"
CMP, DIS = "mnist_kit_shadow_comparisons_total", "mnist_kit_shadow_disagreements_total"
BUCKETS = ("0.01", "0.1", "0.25", "1", "+Inf")


def _histogram(version: str, per_bucket: tuple[int, ...], intervals: int) -> dict[str, str]:
    """A histogram's buckets, each cumulative bucket growing by its count each interval."""
    return {f'{B}{{version="{version}", le="{le}"}}': f"0+{n}x{intervals}" for le, n in zip(BUCKETS, per_bucket)}


CASES = [
    Case(
        "a target down at three evaluations in a row is down; one that answers, or another job's, is not",
        {
            'up{job="mnist-kit", instance="10.0.0.1:8080"}': "1 1 0 0 0 0 0",
            'up{job="mnist-kit", instance="10.0.0.2:8080"}': "1x6",
            'up{job="mnist-kit-pad", instance="127.0.0.1:8000"}': "1 1 1 1 0 1 1",
            'up{job="node", instance="10.0.0.1:9100"}': "0x6",
        },
        [
            (3, "MnistKitTargetDown", []),
            (4, "MnistKitTargetDown", [({"job": "mnist-kit", "instance": "10.0.0.1:8080"}, "")]),
            (4, "MnistKitPadDown", []),
        ],
    ),
    Case(
        "a pad down at three evaluations in a row is down, as a warning",
        {
            'up{job="mnist-kit-pad", instance="127.0.0.1:8000"}': "1 0 0 0 0",
            'up{job="mnist-kit", instance="10.0.0.1:8080"}': "1x4",
        },
        [
            (2, "MnistKitPadDown", []),
            (3, "MnistKitPadDown", [({"job": "mnist-kit-pad", "instance": "127.0.0.1:8000"}, "")]),
            (3, "MnistKitTargetDown", []),
        ],
    ),
    Case(
        "5xx above 1 % of a version's requests fire; 0.5 %, a shadow's, or a handful of requests do not",
        {
            f'{R}{{version="1.0", role="default", status_class="2xx"}}': "0+95x20",
            f'{R}{{version="1.0", role="default", status_class="5xx"}}': "0+5x20",
            f'{R}{{version="2.0", role="canary", status_class="2xx"}}': "0+199x20",
            f'{R}{{version="2.0", role="canary", status_class="5xx"}}': "0+1x20",
            f'{R}{{version="2.0", role="shadow", status_class="5xx"}}': "0+50x20",
            f'{R}{{version="3.0", role="canary", status_class="5xx"}}': "0+3x20",
        },
        [
            (3, "MnistKitErrorRate", []),
            (10, "MnistKitErrorRate", [({"version": "1.0", "role": "default"}, "5%")]),
        ],
    ),
    Case(
        "a p99 over 100 ms fires; a fast version's, or one from a few answers, does not",
        {
            **_histogram("1.0", (0, 0, 100, 100, 100), 20),
            **_histogram("2.0", (100, 100, 100, 100, 100), 20),
            **_histogram("3.0", (0, 0, 0, 5, 5), 20),
        },
        [
            (3, "MnistKitSlowAnswers", []),
            (10, "MnistKitSlowAnswers", [({"version": "1.0"}, "248.5ms")]),
        ],
    ),
    Case(
        "a burst of not_a_digit fires within two intervals; low_confidence, a shadow's or a few pictures do not",
        {
            f'{P}{{version="1.0", role="default"}}': "0+100x20",
            # 2 a scrape, then from the 10th interval on, 60.
            f'{F}{{version="1.0", role="default", flag="not_a_digit"}}': "0+2x9 78+60x10",
            f'{F}{{version="1.0", role="default", flag="several_digits"}}': "0+1x20",
            f'{F}{{version="1.0", role="default", flag="low_confidence"}}': "0+100x20",
            f'{P}{{version="2.0", role="shadow"}}': "0+100x20",
            f'{F}{{version="2.0", role="shadow", flag="not_a_digit"}}': "0+100x20",
            f'{P}{{version="3.0", role="canary"}}': "0+5x20",
            f'{F}{{version="3.0", role="canary", flag="several_digits"}}': "0+5x20",
        },
        [
            (9, "MnistKitFlagSurge", []),
            # the first evaluation that sees the burst: 62 of 200 pictures over the window, firing at once
            (10, "MnistKitFlagSurge", [({"version": "1.0", "role": "default", "flag": "not_a_digit"}, "31%")]),
        ],
    ),
    Case(
        "an index over 0.25 for four intervals fires; a low one, or one over a few pictures, does not",
        {
            'mnist_kit_drift_psi{version="1.0", statistic="ink_share"}': "0.4x10",
            'mnist_kit_drift_psi{version="1.0", statistic="stroke_width"}': "0.1x10",
            'mnist_kit_drift_window_pictures{version="1.0"}': "500x10",
            'mnist_kit_drift_psi{version="2.0", statistic="ink_share"}': "0.9x10",
            'mnist_kit_drift_window_pictures{version="2.0"}': "10x10",
        },
        [
            (3, "MnistKitInputDrift", []),
            (4, "MnistKitInputDrift", [({"version": "1.0", "statistic": "ink_share"}, "0.40")]),
        ],
    ),
    Case(
        "ten corrections saying a version was wrong fire; right answers confirmed, or a few, do not",
        {
            'mnist_kit_feedback_total{model_version="1.0", label="7", wrong="true"}': "0+1x130",
            'mnist_kit_feedback_total{model_version="2.0", label="7", wrong="false"}': "0+1x130",
            'mnist_kit_feedback_total{model_version="2.0", label="3", wrong="true"}': "0+0.05x130",
        },
        [
            (5, "MnistKitCorrectionsSayWrong", []),
            (120, "MnistKitCorrectionsSayWrong", [({"model_version": "1.0"}, "120")]),
        ],
    ),
    Case(
        "a shadow disagreeing on 10 % fires; on 2 %, or on a few pictures, it does not",
        {
            f'{CMP}{{default_version="1.0", shadow_version="2.0"}}': "0+100x20",
            f'{DIS}{{default_version="1.0", shadow_version="2.0"}}': "0+10x20",
            f'{CMP}{{default_version="1.0", shadow_version="3.0"}}': "0+100x20",
            f'{DIS}{{default_version="1.0", shadow_version="3.0"}}': "0+2x20",
            f'{CMP}{{default_version="1.0", shadow_version="4.0"}}': "0+5x20",
            f'{DIS}{{default_version="1.0", shadow_version="4.0"}}': "0+5x20",
        },
        [
            (3, "MnistKitShadowDisagrees", []),
            (10, "MnistKitShadowDisagrees", [({"default_version": "1.0", "shadow_version": "2.0"}, "10%")]),
        ],
    ),
    Case(
        "a worker restart fires at once and for 20 intervals; none, or one longer ago, does not",
        {
            'mnist_kit_worker_restarts_total{instance="10.0.0.1:8080", reason="signal"}': "0x14 1x25",
            'mnist_kit_worker_restarts_total{instance="10.0.0.2:8080", reason="exit"}': "0x40",
        },
        [
            (14, "MnistKitWorkerRestarts", []),
            (20, "MnistKitWorkerRestarts", [({"instance": "10.0.0.1:8080", "reason": "signal"}, "1")]),
            (40, "MnistKitWorkerRestarts", []),
        ],
    ),
]


def rule_tests(interval_s: int, runbooks: str = RUNBOOKS) -> dict:
    """rules.test.yml's document, for `promtool test rules`: every case at this evaluation interval."""
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": duration(interval_s),
        "tests": [_group(case, interval_s, runbooks) for case in CASES],
    }


def _group(case: Case, interval_s: int, runbooks: str) -> dict:
    rules = {alert.name: alert.rule(interval_s, runbooks) for alert in ALERTS}
    return {
        "name": case.name,
        "interval": duration(interval_s),
        "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
        "alert_rule_test": [
            {
                "eval_time": duration(at * interval_s),
                "alertname": name,
                "exp_alerts": [_expected(rules[name], labels, figure) for labels, figure in firing],
            }
            for at, name, firing in case.checks
        ],
    }


def _expected(rule: dict, labels: dict, figure: str) -> dict:
    """The alert as it fires: the rule's labels and the series', and its annotations with the labels and the figure
    written in."""

    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)
        return re.sub(r"\{\{[^}]*\$value[^}]*\}\}", figure, text)

    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {key: fill(text) for key, text in rule["annotations"].items()},
    }
