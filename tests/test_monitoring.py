"""mnist-kit export monitoring: the alerts checked and unit-tested by Prometheus's own promtool, at the default
interval and at 1 s; the dashboard's every query evaluated by promtool; Alertmanager's config checked by amtool;
the PrometheusRule and ServiceMonitor validated offline against the Prometheus Operator's CRDs."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT
from test_deploy import unknown_fields

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.deploy import alert_tests, alerts, dashboard, monitoring
from mnist_kit.deploy.monitoring import dump_yaml

# CI clones the repo beside shared/, as it does for the MNIST files (../shared/data/mnist).
CRDS = Path(os.environ.get("PROMETHEUS_OPERATOR_CRDS") or ROOT.parent / "shared" / "monitoring")
FILES = [
    "alertmanager/alertmanager.yml",
    "grafana/dashboard.json",
    "kubernetes/monitoring.yaml",
    "prometheus/prometheus.yml",
    "prometheus/rules.test.yml",
    "prometheus/rules.yml",
]


def tool(name: str, package: str) -> str:
    """A Debian tool the tests run; a missing one skips them saying why, except in CI, where it must be there."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: scripts/setup.sh installs it (as root: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager")


def run(*command, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=["1s", C.MONITORING_INTERVAL])
def exported(request, tmp_path_factory) -> Path:
    """The export at 1 s (the tests' interval) and at the default, the pad scraped too."""
    out = tmp_path_factory.mktemp("monitoring") / request.param
    monitoring.export_monitoring(out, request.param, ["10.0.0.1:8080", "10.0.0.2:8080"], pad="127.0.0.1:8000")
    return out


# promtool on what the export wrote


def test_promtool_accepts_the_rules(exported, promtool):
    result = run(promtool, "check", "rules", "rules.yml", cwd=exported / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_promtool_accepts_the_config_and_the_rules_it_names(exported, promtool):
    result = run(promtool, "check", "config", "prometheus.yml", cwd=exported / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_every_alerts_unit_tests_pass(exported, promtool):
    result = run(promtool, "test", "rules", "rules.test.yml", cwd=exported / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_whose_threshold_moved_fails_its_unit_test(exported, promtool, tmp_path):
    """The unit tests can fail: the flag alert's threshold raised past the burst's 60 % no longer fires."""
    broken = tmp_path / "prometheus"
    shutil.copytree(exported / "prometheus", broken)
    rules = yaml.safe_load((broken / "rules.yml").read_text())
    flags = next(rule for rule in rules["groups"][0]["rules"] if rule["alert"] == "MnistKitFlagSurge")
    assert f"> {C.MONITORING_FLAG_SHARE}\n" in flags["expr"]
    flags["expr"] = flags["expr"].replace(f"> {C.MONITORING_FLAG_SHARE}\n", "> 0.7\n")
    (broken / "rules.yml").write_text(dump_yaml([rules]))
    result = run(promtool, "test", "rules", "rules.test.yml", cwd=broken)
    assert result.returncode != 0
    assert "MnistKitFlagSurge" in result.stdout + result.stderr


def test_a_rule_that_does_not_parse_fails_the_check(exported, promtool, tmp_path):
    rules = (exported / "prometheus" / "rules.yml").read_text()
    (tmp_path / "rules.yml").write_text(rules.replace("histogram_quantile(0.99, ", "histogram_quantile(0.99 "))
    result = run(promtool, "check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode != 0 and "MnistKitSlowAnswers" in result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config(exported, amtool):
    result = run(amtool, "check-config", "alertmanager.yml", cwd=exported / "alertmanager")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_flag_burst_fires_within_two_evaluation_intervals(promtool, tmp_path):
    """At 1 s: not_a_digit goes from 2 % to 60 % of the pictures in the sample at 10 s; the alert fires at 11 s."""
    monitoring.export_monitoring(tmp_path / "m", "1s")
    picture, flag = 'mnist_kit_pictures_total{version="1.0", role="default"}', "mnist_kit_flags_total"
    burst = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": [
                    {"series": picture, "values": "0+100x20"},
                    {
                        "series": f'{flag}{{version="1.0", role="default", flag="not_a_digit"}}',
                        "values": "0+2x9 78+60x10",
                    },
                ],
                "promql_expr_test": [
                    {"expr": 'ALERTS{alertname="MnistKitFlagSurge"}', "eval_time": f"{t}s", "exp_samples": samples}
                    for t, samples in [
                        (9, []),
                        (10, [{"labels": _alert_series("firing"), "value": 1}]),
                    ]
                ],
            }
        ],
    }
    (tmp_path / "m" / "prometheus" / "burst.test.yml").write_text(yaml.safe_dump(burst))
    result = run(promtool, "test", "rules", "burst.test.yml", cwd=tmp_path / "m" / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_series(state: str) -> str:
    return (
        f'ALERTS{{alertname="MnistKitFlagSurge", alertstate="{state}", flag="not_a_digit", role="default", '
        'severity="warning", version="1.0"}'
    )


# The rules themselves


def test_every_alert_has_a_wait_a_severity_a_figure_and_a_runbook():
    for rule in alerts.rules(30)["groups"][0]["rules"]:
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert "$value" in rule["annotations"]["description"] or rule["alert"].endswith("Down")
        assert rule["annotations"]["runbook_url"] == f"docs/MONITORING.md#{rule['alert'].lower()}"


def test_every_runbook_anchor_is_a_section_of_monitoring_md():
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "MONITORING.md").read_text(), flags=re.M)
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}
    assert {a.name.lower() for a in alerts.ALERTS} <= anchors


def test_windows_and_waits_are_multiples_of_the_interval():
    """The rules at 30 s are the rules at 1 s with every duration 30 times as long."""

    def durations(rules: dict) -> list[int]:
        texts = [f"{r['expr']} [{r['for']}]" for r in rules["groups"][0]["rules"]]
        return [alerts.seconds(d) if d != "0s" else 0 for t in texts for d in re.findall(r"\[([0-9]+[smh])\]", t)]

    at_1s, at_30s = durations(alerts.rules(1)), durations(alerts.rules(30))
    assert at_30s == [30 * d for d in at_1s] and len(at_1s) > len(alerts.ALERTS)


def test_every_alert_is_tested_firing_and_quiet():
    checks = [check for group in alert_tests.rule_tests(1)["tests"] for check in group["alert_rule_test"]]
    for alert in alerts.ALERTS:
        mine = [check for check in checks if check["alertname"] == alert.name]
        assert any(check["exp_alerts"] for check in mine), alert.name
        assert any(not check["exp_alerts"] for check in mine), alert.name


def test_an_interval_that_is_not_a_duration_is_refused():
    with pytest.raises(monitoring.DeployError, match="--interval '30': a whole number of seconds"):
        monitoring.files("30")


# The dashboard


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel(exported):
    board = json.loads((exported / "grafana" / "dashboard.json").read_text())
    assert board["schemaVersion"] >= 36 and board["templating"]["list"][0]["type"] == "datasource"
    assert len(board["panels"]) == len(dashboard.PANELS) and len({p["id"] for p in board["panels"]}) == len(
        board["panels"]
    )
    for panel in board["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    interval = alerts.seconds(exported.name)
    assert [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]] == dashboard.queries(interval)


def test_the_dashboard_has_the_panels_an_operator_asks_for():
    titles = " | ".join(title for title, _ in dashboard.queries(30)).lower()
    for subject in ("status class", "p99", "digit", "flag", "confidence", "drift", "rejected", "shadow", "wrong"):
        assert subject in titles
    assert "restarts" in titles


# Every metric each panel reads, as the runtime and the pad label them: 130 one-second samples.
SERIES = {
    'mnist_kit_requests_total{version="1.0", role="default", status_class="2xx"}': "0+90x130",
    'mnist_kit_requests_total{version="1.0", role="default", status_class="4xx"}': "0+10x130",
    **{
        f'mnist_kit_request_seconds_bucket{{version="1.0", le="{le}"}}': f"0+{n}x130"
        for le, n in [("0.001", 50), ("0.01", 99), ("+Inf", 100)]
    },
    **{f'mnist_kit_answers_total{{version="1.0", role="default", digit="{d}"}}': f"0+{d + 1}x130" for d in range(10)},
    'mnist_kit_pictures_total{version="1.0", role="default"}': "0+100x130",
    'mnist_kit_flags_total{version="1.0", role="default", flag="not_a_digit"}': "0+3x130",
    **{
        f'mnist_kit_confidence_ratio_bucket{{version="1.0", role="default", le="{le}"}}': f"0+{n}x130"
        for le, n in [("0.5", 5), ("0.9", 20), ("1", 100), ("+Inf", 100)]
    },
    'mnist_kit_drift_psi{version="1.0", statistic="ink_share"}': "0.1x130",
    'mnist_kit_rejected_total{version="1.0", reason="blank"}': "0+1x130",
    'mnist_kit_shadow_comparisons_total{default_version="1.0", shadow_version="2.0"}': "0+100x130",
    'mnist_kit_shadow_disagreements_total{default_version="1.0", shadow_version="2.0"}': "0+1x130",
    'mnist_kit_feedback_total{model_version="1.0", label="7", wrong="true"}': "0+1x130",
    'mnist_kit_worker_restarts_total{instance="10.0.0.1:8080", reason="signal"}': "0x60 1x69",
    'up{job="mnist-kit", instance="10.0.0.1:8080"}': "1x130",
}


def test_prometheus_evaluates_every_panels_query_to_numbers(promtool, tmp_path):
    """Each query as an alert that fires when it returns at least one series that is a number (NaN != NaN): a query
    Prometheus refuses, a vector match it cannot make, or an empty answer fails its alert's test."""
    queries = dashboard.queries(1)
    rules = [{"alert": f"Panel{n}", "expr": f"count(({expr}) == ({expr})) > 0"} for n, (_, expr) in enumerate(queries)]
    (tmp_path / "rules.yml").write_text(dump_yaml([{"groups": [{"name": "panels", "rules": rules}]}]))
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": [{"series": s, "values": v} for s, v in SERIES.items()],
                "alert_rule_test": [
                    {"eval_time": "125s", "alertname": rule["alert"], "exp_alerts": [{"exp_labels": {}}]}
                    for rule in rules
                ],
            }
        ],
    }
    (tmp_path / "rules.test.yml").write_text(dump_yaml([tests]))
    result = run(promtool, "test", "rules", "rules.test.yml", cwd=tmp_path)
    failed = re.findall(r"alertname: (Panel[0-9]+)", result.stdout + result.stderr)
    assert result.returncode == 0, [queries[int(name[5:])] for name in failed] or result.stdout + result.stderr


# Kubernetes: the Prometheus Operator's resources


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """The CRDs' openAPIV3Schema per kind; missing files skip, except in CI, where they must be there."""
    found = {}
    for kind, filename in [("PrometheusRule", "prometheusrules"), ("ServiceMonitor", "servicemonitors")]:
        path = CRDS / f"monitoring.coreos.com_{filename}.yaml"
        if not path.is_file():
            message = f"{path} not found: set PROMETHEUS_OPERATOR_CRDS (CI uses ../shared/monitoring/)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        version = next(v for v in yaml.safe_load(path.read_text())["spec"]["versions"] if v["name"] == "v1")
        # Not check_schema: the CRDs' patterns are Go's (`^(?i)(abort|warn)?$`), which Python's re refuses; they
        # are compiled only where a document has the field, and these have none of those.
        schema = version["schema"]["openAPIV3Schema"]
        found[kind] = jsonschema.validators.validator_for(schema)(schema)
    return found


def test_the_prometheus_rule_and_service_monitor_validate_against_the_operators_crds(exported, crd_validators):
    documents = list(yaml.safe_load_all((exported / "kubernetes" / "monitoring.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["PrometheusRule", "ServiceMonitor"]
    for document in documents:
        crd_validators[document["kind"]].validate(document)
        assert unknown_fields(document, crd_validators[document["kind"]].schema) == []


def test_the_validation_catches_a_wrong_field(crd_validators):
    rule, _ = monitoring.kubernetes_documents(30)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    with pytest.raises(jsonschema.ValidationError):
        crd_validators["PrometheusRule"].validate(rule)


def test_the_prometheus_rule_holds_the_same_rules_as_rules_yml(exported):
    (rule, _) = yaml.safe_load_all((exported / "kubernetes" / "monitoring.yaml").read_text())
    assert rule["spec"] == yaml.safe_load((exported / "prometheus" / "rules.yml").read_text())


def test_the_service_monitor_scrapes_the_kserve_runtimes_service_as_job_mnist_kit():
    _, monitor = monitoring.kubernetes_documents(30, name="digits")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "digits",
        "app.kubernetes.io/part-of": "mnist-kit",
    }
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": alerts.JOB}]


# Prometheus's and Alertmanager's configs


def test_prometheus_scrapes_the_runtimes_and_the_pad_twice_an_interval_and_alerts_alertmanager(exported):
    config = yaml.safe_load((exported / "prometheus" / "prometheus.yml").read_text())
    interval = exported.name
    assert config["global"]["evaluation_interval"] == interval
    assert config["global"]["scrape_interval"] == {"1s": "500ms", "30s": "15s"}[interval]
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {"mnist-kit": ["10.0.0.1:8080", "10.0.0.2:8080"], "mnist-kit-pad": ["127.0.0.1:8000"]}
    assert config["rule_files"] == ["rules.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [C.MONITORING_ALERTMANAGER]


def test_without_a_pad_prometheus_scrapes_the_runtimes_only():
    config = monitoring.prometheus_config(30, ["127.0.0.1:8080"])
    assert [job["job_name"] for job in config["scrape_configs"]] == ["mnist-kit"]


def test_alertmanager_sends_every_alert_to_the_placeholder_webhook_it_says_to_replace(exported):
    text = (exported / "alertmanager" / "alertmanager.yml").read_text()
    assert text.startswith("# Alertmanager") and "REPLACE the webhook's url" in text
    config = yaml.safe_load(text)
    assert config["receivers"][0]["webhook_configs"][0]["url"] == monitoring.WEBHOOK
    assert config["route"]["receiver"] == config["receivers"][0]["name"]


# The command


def test_the_command_writes_every_file_and_says_what_next(tmp_path):
    out = tmp_path / "monitoring"
    result = CliRunner().invoke(cli, ["export", "monitoring", str(out), "--interval", "15s", "--pad", "127.0.0.1:8000"])
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == FILES
    assert result.output.startswith(f"wrote {out}/: {', '.join(FILES)}\n")
    assert f"promtool test rules {out}/prometheus/rules.test.yml" in result.output
    assert "evaluation_interval: 15s" in (out / "prometheus" / "prometheus.yml").read_text()


def test_the_command_refuses_a_folder_with_files_in_it_without_force(tmp_path):
    out = tmp_path / "monitoring"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = CliRunner().invoke(cli, ["export", "monitoring", str(out)])
    assert result.exit_code == 1 and "already exists and is not empty: pass --force" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    result = CliRunner().invoke(cli, ["export", "monitoring", str(out), "--force"])
    assert result.exit_code == 0 and not (out / "mine.txt").exists() and (out / "prometheus" / "rules.yml").is_file()


def test_the_command_writes_into_an_empty_folder(tmp_path):
    result = CliRunner().invoke(cli, ["export", "monitoring", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "grafana" / "dashboard.json").is_file()


def test_a_target_that_is_not_host_and_port_fails_in_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["export", "monitoring", str(tmp_path / "m"), "--targets", "10.0.0.1:8080,web"])
    assert result.exit_code == 1 and result.output == "Error: --targets 'web': HOST:PORT, as 127.0.0.1:8080\n"
    assert list(tmp_path.iterdir()) == []
