"""The serving runtime's Grafana dashboard, in Grafana's JSON model, built by hand: a panel per question an operator
asks, each query plain PromQL (no Grafana macro), so that Prometheus itself can evaluate every one (`queries`).

Rates are over 4 scrape intervals, Grafana's own rule for $__rate_interval: a rate needs two samples, and four
leave room for a late or lost scrape. The corrections panel counts over the alert's hour instead.
"""

from dataclasses import dataclass

from mnist_kit import constants as C
from mnist_kit.deploy.alerts import FLAGS_WATCHED, JOB, PAD_JOB, duration

ANSWERING = 'role!="shadow"'  # a shadow reads the pictures but answers nobody
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Panel:
    """One panel: its title, what it shows, its unit, and its queries with their legends; `<w>` is the rate window."""

    title: str
    description: str
    unit: str
    queries: list[tuple[str, str]]
    kind: str = "timeseries"
    threshold: float | None = None


PANELS = [
    Panel(
        "Requests by status class",
        "Requests answered per second, per version and role (default, canary; a shadow answers nobody), by status "
        "class: 4xx is the request's own fault, 5xx the runtime's.",
        "reqps",
        [
            (
                f"sum by (version, role, status_class) (rate(mnist_kit_requests_total{{{ANSWERING}}}[<w>]))",
                "{{version}} {{role}} {{status_class}}",
            )
        ],
    ),
    Panel(
        "Latency p50 and p99",
        "From a request's arrival at its version's batcher to its answer.",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (version, le) (rate(mnist_kit_request_seconds_bucket[<w>])))",
                f"{{{{version}}}} p{round(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    Panel(
        "Answers per digit",
        "Digits answered per second: a digit that grows or vanishes is a change in the traffic or the model.",
        "short",
        [(f"sum by (digit) (rate(mnist_kit_answers_total{{{ANSWERING}}}[<w>]))", "{{digit}}")],
    ),
    Panel(
        "Flag shares",
        "Each flag's share of the pictures each version read; the alert watches "
        f"{' and '.join(FLAGS_WATCHED)} (on real digits, at most 4%).",
        "percentunit",
        [
            (
                f"sum by (version, flag) (rate(mnist_kit_flags_total{{{ANSWERING}}}[<w>]))\n"
                f"  / ignoring (flag) group_left sum by (version) (rate(mnist_kit_pictures_total{{{ANSWERING}}}[<w>]))",
                "{{version}} {{flag}}",
            )
        ],
    ),
    Panel(
        "Confidence distribution",
        "How sure the answers are: the answers in each confidence bucket per window (darker: more).",
        "percentunit",
        [
            (
                f"sum by (le) (increase(mnist_kit_confidence_ratio_bucket{{{ANSWERING}}}[<w>]))",
                "{{le}}",
            )
        ],
        kind="heatmap",
    ),
    Panel(
        "Input drift (PSI)",
        "The population stability index of each statistic of the pictures against the version's reference; "
        f"above {C.MONITORING_DRIFT_PSI} (the line) the population has changed.",
        "none",
        [("max by (version, statistic) (mnist_kit_drift_psi)", "{{version}} {{statistic}}")],
        threshold=C.MONITORING_DRIFT_PSI,
    ),
    Panel(
        "Rejected by reason",
        "Requests refused before the model (4xx): what people send that the kit cannot read.",
        "reqps",
        [("sum by (reason) (rate(mnist_kit_rejected_total[<w>]))", "{{reason}}")],
    ),
    Panel(
        "Shadow agreement",
        "The share of pictures the shadow reads as the default does (digit and not_a_digit).",
        "percentunit",
        [
            (
                "1 - sum by (default_version, shadow_version) (rate(mnist_kit_shadow_disagreements_total[<w>]))\n"
                "  / sum by (default_version, shadow_version) (rate(mnist_kit_shadow_comparisons_total[<w>]))",
                "{{shadow_version}} vs {{default_version}}",
            )
        ],
    ),
    Panel(
        "Corrections saying wrong",
        "Corrections from the pads saying the answer was wrong, per version and label, over the alert's window.",
        "short",
        [
            (
                'sum by (model_version, label) (increase(mnist_kit_feedback_total{wrong="true"}[<h>]))',
                "{{model_version}} said {{label}}",
            )
        ],
    ),
    Panel(
        "Worker restarts",
        "Workers the runtime restarted, per instance and reason.",
        "short",
        [("sum by (instance, reason) (increase(mnist_kit_worker_restarts_total[<w>]))", "{{instance}} {{reason}}")],
    ),
    Panel(
        "Targets up",
        "1 while Prometheus scrapes the target, 0 when it cannot.",
        "none",
        [(f'up{{job=~"{JOB}|{PAD_JOB}"}}', "{{job}} {{instance}}")],
    ),
]


def _windows(interval_s: int) -> dict[str, str]:
    return {"<w>": duration(4 * interval_s), "<h>": duration(120 * interval_s)}


def _query(text: str, interval_s: int) -> str:
    for token, window in _windows(interval_s).items():
        text = text.replace(token, window)
    return text


def queries(interval_s: int) -> list[tuple[str, str]]:
    """Every (panel title, PromQL query) of the dashboard, as Prometheus would be asked them."""
    return [(panel.title, _query(expr, interval_s)) for panel in PANELS for expr, _ in panel.queries]


def dashboard(interval_s: int) -> dict:
    """The dashboard, Grafana's JSON model (schemaVersion 39): two panels a row, its Prometheus picked on import."""
    return {
        "uid": "mnist-kit",
        "title": "mnist-kit serving",
        "description": "The kit's serving runtime and pads (mnist-kit export monitoring; docs/MONITORING.md).",
        "tags": ["mnist-kit"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": duration(interval_s),
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                }
            ]
        },
        "panels": [_panel(n, panel, interval_s) for n, panel in enumerate(PANELS)],
    }


def _panel(n: int, panel: Panel, interval_s: int) -> dict:
    defaults = {"unit": panel.unit}
    if panel.threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": panel.threshold}],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    heatmap = panel.kind == "heatmap"
    targets = [
        {
            "refId": chr(ord("A") + k),
            "datasource": DATASOURCE,
            "expr": _query(expr, interval_s),
            "legendFormat": legend,
            "range": True,
            **({"format": "heatmap"} if heatmap else {}),
        }
        for k, (expr, legend) in enumerate(panel.queries)
    ]
    options = (
        {"calculate": False, "yAxis": {"unit": panel.unit}, "color": {"mode": "scheme", "scheme": "Oranges"}}
        if heatmap
        else {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    )
    return {
        "id": n + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "gridPos": {"x": 12 * (n % 2), "y": 8 * (n // 2), "w": 12, "h": 8},
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }
