"""`mnist-kit export monitoring`: what an operator needs to watch the serving runtime, in one folder.

    prometheus/prometheus.yml       scrapes the runtimes' /metrics and the pad's, evaluates rules.yml, alerts
    prometheus/rules.yml            the alerts (alerts.py), each with why its window and wait
    prometheus/rules.test.yml       their unit tests (alert_tests.py): `promtool test rules rules.test.yml`
    alertmanager/alertmanager.yml   a route to a webhook receiver, a placeholder to replace
    grafana/dashboard.json          the dashboard (dashboard.py)
    kubernetes/monitoring.yaml      the same rules as a PrometheusRule, and a ServiceMonitor of the runtime's Service

The Kubernetes documents stand apart from `export k8s`'s kubernetes.yaml: they need the Prometheus Operator's CRDs,
and a cluster without them would refuse the whole file. --interval is the evaluation interval, and every rule's
window and wait a multiple of it; Prometheus scrapes twice an interval (`scrape_every`).
"""

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mnist_kit import constants as C
from mnist_kit.deploy import alert_tests, alerts, dashboard
from mnist_kit.deploy.alerts import JOB, PAD_JOB, RUNBOOKS, duration
from mnist_kit.deploy.resources import DeployError

LABELS = {"app.kubernetes.io/part-of": "mnist-kit"}
WEBHOOK = "http://127.0.0.1:5001/mnist-kit"  # a placeholder: alertmanager.yml says to replace it


def address(text: str, option: str) -> str:
    """HOST:PORT as Prometheus scrapes it; refuses anything else, naming the option."""
    found = re.fullmatch(r"([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):([0-9]{1,5})", text.strip())
    if not found or not 0 < int(found[2]) < 65536:
        raise DeployError(f"{option} {text!r}: HOST:PORT, as 127.0.0.1:{C.INFERENCE_PORT}")
    return text.strip()


def scrape_every(interval_s: int) -> float:
    """Seconds between two scrapes: half the evaluation interval, so that a rule reads a figure at most half an
    interval old, and an alert reaches Alertmanager within its wait and one and a half intervals of the change it
    watches (and its figure's own delay: a rate's window, a drift window's turn), where scraping as often as it
    evaluates costs up to two intervals."""
    return interval_s / 2


def prometheus_config(
    interval_s: int, targets: list[str], pad: str | None = None, *, alertmanager: str = C.MONITORING_ALERTMANAGER
) -> dict:
    """prometheus.yml: the runtimes (their /metrics is on the inference port) and the pad, scraped twice an
    interval; the rules evaluated every interval."""
    scrape_configs = [{"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}]
    if pad:
        scrape_configs.append({"job_name": PAD_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [pad]}]})
    return {
        "global": {
            "scrape_interval": duration(scrape_every(interval_s)),
            # Prometheus refuses a scrape timeout longer than the scrape interval; 10 s is its default.
            "scrape_timeout": duration(min(scrape_every(interval_s), 10)),
            "evaluation_interval": duration(interval_s),
        },
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": scrape_configs,
    }


def alertmanager_config() -> dict:
    """alertmanager.yml: every alert to one webhook, critical ones repeated hourly, the others twice a day."""
    return {
        "route": {
            "receiver": "mnist-kit",
            "group_by": ["alertname", "version"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [{"matchers": ['severity="critical"'], "receiver": "mnist-kit", "repeat_interval": "1h"}],
        },
        "receivers": [{"name": "mnist-kit", "webhook_configs": [{"url": WEBHOOK, "send_resolved": True}]}],
    }


def kubernetes_documents(interval_s: int, *, name: str = C.MODEL_NAME, runbooks: str = RUNBOOKS) -> list[dict]:
    """The Prometheus Operator's PrometheusRule (rules.yml's groups) and a ServiceMonitor of the Service `export k8s
    --runtime kserve` writes (its port `http` carries /metrics), its job relabelled as prometheus.yml names it."""
    labels = {"app.kubernetes.io/name": name, **LABELS}
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": f"{name}-alerts", "labels": labels},
            "spec": alerts.rules(interval_s, runbooks),
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics",
                        "interval": duration(scrape_every(interval_s)),
                        "scrapeTimeout": duration(min(scrape_every(interval_s), 10)),
                        "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": JOB}],
                    }
                ],
            },
        },
    ]


def dump_yaml(documents: list[dict], header: str = "") -> str:
    """YAML as people write it, a header of comments first: keys in the order given, block style, multi-line
    strings as literal blocks, and long lines left long (a folded template is hard to read)."""

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    def string(dumper, value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, string)
    text = yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text


@dataclass(frozen=True)
class Monitoring:
    """What the export wrote (paths relative to out), at which interval."""

    out: Path
    files: list[str]
    interval: str


def files(
    interval: str = C.MONITORING_INTERVAL,
    targets: tuple[str, ...] = (f"{C.HOST}:{C.INFERENCE_PORT}",),
    pad: str | None = None,
    *,
    alertmanager: str = C.MONITORING_ALERTMANAGER,
    name: str = C.MODEL_NAME,
    runbooks: str = RUNBOOKS,
) -> dict[str, str]:
    """Every file of the export, path → text."""
    i = alerts.seconds(interval)
    targets = [address(t, "--targets") for t in targets]
    if not targets:
        raise DeployError("--targets: at least one runtime, HOST:PORT")
    pad = address(pad, "--pad") if pad else None
    alertmanager = address(alertmanager, "--alertmanager")
    every = duration(i)
    jobs = f"the runtimes' /metrics (job {JOB})" + (f" and the pad's (job {PAD_JOB})" if pad else "")
    return {
        "prometheus/prometheus.yml": dump_yaml(
            [prometheus_config(i, targets, pad, alertmanager=alertmanager)],
            f"Prometheus for mnist-kit (mnist-kit export monitoring --interval {every}): scrapes {jobs}\n"
            f"every {duration(scrape_every(i))}, evaluates rules.yml every {every}, and alerts the Alertmanager at "
            f"{alertmanager}.\n"
            "A runtime in the production profile wants its token on /metrics too: add to its job\n"
            "  authorization: {credentials_file: /etc/prometheus/mnist-kit.token}\n"
            "Run: prometheus --config.file=prometheus.yml (docs/MONITORING.md)",
        ),
        "prometheus/rules.yml": alerts.commented(
            dump_yaml(
                [alerts.rules(i, runbooks)],
                f"mnist-kit's alerts, evaluated every {every}: each rule's windows and `for:` are multiples of it, "
                "and the comment above it says why.\nTheir tests: promtool test rules rules.test.yml",
            )
        ),
        "prometheus/rules.test.yml": dump_yaml(
            [alert_tests.rule_tests(i, runbooks)],
            f"promtool test rules rules.test.yml: each alert of rules.yml fired and kept quiet, at {every}.",
        ),
        "alertmanager/alertmanager.yml": dump_yaml(
            [alertmanager_config()],
            f"Alertmanager for mnist-kit's alerts. REPLACE the webhook's url ({WEBHOOK}, a placeholder) with\n"
            "your receiver's, or the receiver with Slack's, PagerDuty's or e-mail's configs (docs/MONITORING.md).\n"
            "Check it: amtool check-config alertmanager.yml",
        ),
        "grafana/dashboard.json": json.dumps(dashboard.dashboard(i), indent=2) + "\n",
        "kubernetes/monitoring.yaml": dump_yaml(
            kubernetes_documents(i, name=name, runbooks=runbooks),
            "The Prometheus Operator's PrometheusRule (rules.yml's alerts) and a ServiceMonitor of the Service\n"
            f"`mnist-kit export k8s --runtime kserve --name {name}` writes. Needs the operator's CRDs:\n"
            "  kubectl apply -f kubernetes/monitoring.yaml",
        ),
    }


def export_monitoring(
    out,
    interval: str = C.MONITORING_INTERVAL,
    targets: tuple[str, ...] = (f"{C.HOST}:{C.INFERENCE_PORT}",),
    *,
    pad: str | None = None,
    alertmanager: str = C.MONITORING_ALERTMANAGER,
    name: str = C.MODEL_NAME,
    runbooks: str = RUNBOOKS,
    force: bool = False,
) -> Monitoring:
    """Write every file (`files`) to OUT, whole or not at all: staged beside it, then renamed into place. An OUT
    that exists and is not empty is replaced only with force."""
    out = Path(out)
    if _taken(out) and not force:
        raise DeployError(f"{out} already exists and is not empty: pass --force to replace it")
    written = files(interval, targets, pad, alertmanager=alertmanager, name=name, runbooks=runbooks)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        for path, text in written.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text)
        os.chmod(staging, 0o755)
        if _taken(out):
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-old-"))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)  # over an empty folder, or none
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Monitoring(out, sorted(written), duration(alerts.seconds(interval)))


def _taken(out: Path) -> bool:
    return out.exists() and (not out.is_dir() or any(out.iterdir()))
