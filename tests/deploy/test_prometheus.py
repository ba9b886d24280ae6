"""deploy/prometheus: scrape targets match the compose services, the alert rules exist and
name real metrics; promtool checks both when Debian's `prometheus` package is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.deploy import DEPLOY, compose, env_of, exported_metric_names, load_yaml, metric_names

PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
REQUIRED_ALERTS = {"TickwireConsumerLagGrowing", "TickwireDLQMessages", "TickwireNoRowsWritten", "TickwireNotReady", "TickwireDatabaseRetrying"}


@pytest.fixture(scope="module")
def config() -> dict:
    return load_yaml(PROMETHEUS)


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    groups = load_yaml(ALERTS)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _dns_targets(config: dict) -> dict[str, list[tuple[str, int]]]:
    """job name -> [(compose service, port)] for every dns_sd_configs entry."""
    return {
        job["job_name"]: [(name, sd["port"]) for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
        for job in config["scrape_configs"]
    }


def test_every_scraped_port_is_the_services_metrics_port(config):
    services = compose()["services"]
    pairs = [pair for targets in _dns_targets(config).values() for pair in targets]
    assert pairs, "no dns_sd_configs target: scaled replicas would not all be scraped"
    for service, port in pairs:
        assert service in services, f"scrapes {service}, which docker-compose.yml does not define"
        metrics_port = env_of(services[service]).get("TICKWIRE_METRICS_PORT")
        assert metrics_port == str(port), f"{service}: scraped on {port}, serves on TICKWIRE_METRICS_PORT={metrics_port}"


def test_every_long_running_tickwire_service_is_scraped(config):
    services = compose()["services"]
    scraped = {service for targets in _dns_targets(config).values() for service, _ in targets}
    serving = {name for name, s in services.items() if "TICKWIRE_METRICS_PORT" in env_of(s)}
    assert serving, "no service sets TICKWIRE_METRICS_PORT"
    assert serving <= scraped, f"not scraped: {sorted(serving - scraped)}"


def test_dns_discovery_uses_a_records(config):
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            # A records list every replica; SRV needs records compose's DNS does not serve.
            assert sd.get("type") == "A" and sd.get("port"), job["job_name"]


def test_rule_files_exist(config):
    files = config.get("rule_files") or []
    assert files
    for name in files:
        assert (PROMETHEUS.parent / name).is_file(), f"rule file {name} is not beside prometheus.yml"


def test_the_four_alerts_exist_with_their_conditions(rules):
    assert REQUIRED_ALERTS <= set(rules), f"missing alerts: {sorted(REQUIRED_ALERTS - set(rules))}"
    lag = rules["TickwireConsumerLagGrowing"]
    assert re.search(r"\b(deriv|delta)\(\s*tickwire_consumer_lag_messages\b[^)]*\[5m\]", lag["expr"])
    assert lag.get("for") == "5m"
    assert re.search(r"rate\(\s*tickwire_dlq_messages_total\b.*\)\s*\)?\s*>\s*0\b", rules["TickwireDLQMessages"]["expr"])
    rows = rules["TickwireNoRowsWritten"]["expr"]
    assert re.search(r"rate\(\s*tickwire_rows_written_total\s*\[2m\]", rows) and "== 0" in rows and "absent(" in rows
    assert re.search(r"\btickwire_ready\b.*==\s*0\b", rules["TickwireNotReady"]["expr"])
    retrying = rules["TickwireDatabaseRetrying"]
    assert "tickwire_db_retries_total" in retrying["expr"] and retrying.get("for") == "5m"


def test_alerts_have_a_severity_and_a_summary(rules):
    for name, rule in rules.items():
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        assert rule.get("annotations", {}).get("summary"), name


def test_alerts_name_only_exported_metrics(rules):
    known = exported_metric_names()
    for name, rule in rules.items():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{name} uses metrics schemas/metrics.py does not export: {sorted(unknown)}"


def test_job_selectors_name_scrape_jobs(config, rules):
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for name, rule in rules.items():
        for selector in re.findall(r'job=~?"([^"]+)"', rule["expr"]):
            named = set(selector.split("|"))
            assert named <= jobs, f"{name} selects jobs {sorted(named - jobs)} that prometheus.yml does not scrape"


def test_promtool_accepts_config_and_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package: prometheus)")
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
