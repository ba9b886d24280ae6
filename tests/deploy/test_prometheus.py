"""deploy/prometheus: scrape targets match the compose services, the alert rules exist,
name real metrics and have a README runbook; promtool checks both, and runs the rules'
unit tests, when Debian's `prometheus` package is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.deploy import DEPLOY, ROOT, compose, env_of, exported_metric_names, load_yaml, metric_names

PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# promtool's unit tests of the rules: input series, and which alerts they must (not) fire.
ALERTS_TEST = ROOT / "tests" / "deploy" / "alerts_test.yml"
README = ROOT / "README.md"
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
    assert re.search(r"rate\(\s*tickwire_rows_written_total\b[^)]*\[2m\]", rows) and "== 0" in rows and "absent(" in rows
    assert re.search(r"\btickwire_ready\b.*==\s*0\b", rules["TickwireNotReady"]["expr"])
    retrying = rules["TickwireDatabaseRetrying"]
    assert "tickwire_db_retries_total" in retrying["expr"] and retrying.get("for") == "5m"


def test_no_rows_written_pages_only_for_busy_tables_while_market_data_arrives(rules):
    from tickwire.schemas.tables import SINKS
    from tickwire.schemas.topics import CONDITIONS

    expr = rules["TickwireNoRowsWritten"]["expr"]
    # Guarded by the same job's input: a closed market consumes nothing and must not page.
    assert re.search(r"\band on \(job\).*rate\(\s*tickwire_messages_consumed_total\b.*>\s*0\s*$", expr, re.DOTALL)
    guard = re.search(r'tickwire_messages_consumed_total\{[^}]*topic=~"([^"]+)"', expr)
    assert guard and re.fullmatch(guard.group(1), CONDITIONS.name), "the guard must follow the conditions topic"
    excluded = re.search(r'tickwire_rows_written_total\{[^}]*table!~"([^"]+)"', expr)
    assert excluded, "tables quiet by nature must be left out"
    quiet, tables = set(excluded.group(1).split("|")), {table.name for _, table in SINKS}
    assert quiet <= tables, f"not tables of schemas/tables.py: {sorted(quiet - tables)}"
    assert "market_regime_history" in quiet and "market_conditions" not in quiet
    # A deployment without an execution feed writes none of the execution tables: no page.
    from tickwire.schemas.tables import EXECUTION_TABLES
    assert {table.name for table in EXECUTION_TABLES} <= quiet


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one suffixed -1, -2, ... A ``#`` line in a code block is no heading."""
    anchors: set[str] = set()
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose, re.MULTILINE):
        base = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = base, 0
        while anchor in anchors:
            n += 1
            anchor = f"{base}-{n}"
        anchors.add(anchor)
    return anchors


def test_every_alert_has_a_runbook_section_in_the_readme(rules):
    anchors = _github_anchors(README.read_text())
    for name, rule in rules.items():
        url = rule.get("annotations", {}).get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page == "README.md" and anchor, f"{name}: runbook_url {url!r} is not README.md#<section>"
        assert anchor in anchors, f"{name}: README.md has no heading with the anchor #{anchor}"


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
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)], ["test", "rules", str(ALERTS_TEST)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
