"""deploy/grafana: provisioning points where compose mounts the files, and every panel
queries metrics the code exports (or a documented future one), through the $datasource,
$job and $instance variables, so the dashboard also drops into an existing Grafana."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy import DEPLOY, compose, exported_metric_names, load_yaml, metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tickwire.json"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_has_identity(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_every_panel_has_targets_with_queries(dashboard):
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: empty query"


def test_panels_name_only_exported_metrics(dashboard):
    known = exported_metric_names()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            unknown = metric_names(target["expr"]) - known
            assert not unknown, f"panel {panel['title']!r} uses {sorted(unknown)}, not in schemas/metrics.py"


def test_dashboard_covers_the_story(dashboard):
    used = set().union(*(metric_names(e) for e in _exprs(dashboard)))
    wanted = {
        "tickwire_messages_consumed_total", "tickwire_messages_produced_total", "tickwire_rows_written_total",
        "tickwire_consumer_lag_messages", "tickwire_event_latency_seconds_bucket",
        "tickwire_flush_duration_seconds_bucket", "tickwire_dlq_messages_total", "tickwire_batch_rows_bucket",
        "tickwire_symbols_by_regime",
    }
    assert wanted <= used, f"not on the dashboard: {sorted(wanted - used)}"
    quantiles = {q for e in _exprs(dashboard) for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)", e)}
    assert {"0.5", "0.99"} <= quantiles, "latency needs p50 and p99"
    dlq = [e for e in _exprs(dashboard) if "tickwire_dlq_messages_total" in e]
    assert any(re.search(r"by \([^)]*\breason\b", e) for e in dlq), "DLQ must be split by reason"


def test_counters_are_shown_as_rates(dashboard):
    for expr in _exprs(dashboard):
        for name in metric_names(expr):
            if name.endswith(("_total", "_bucket", "_sum", "_count")):
                assert re.search(rf"(rate|increase)\(\s*{name}\b", expr), f"{name} is not under rate(): {expr}"


def test_panels_do_not_overlap(dashboard):
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    for i, (a, ga) in enumerate(boxes):
        assert ga["x"] + ga["w"] <= 24, a
        for b, gb in boxes[i + 1 :]:
            apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                     or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
            assert apart, f"panels {a!r} and {b!r} overlap"


def _variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_every_panel_and_target_queries_the_datasource_variable(dashboard):
    # A variable, not the compose stack's uid, so the dashboard drops into any Grafana.
    source = _variables(dashboard).get("datasource", {})
    assert source.get("type") == "datasource" and source.get("query") == "prometheus", source
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]:
            assert ref == {"type": "prometheus", "uid": "${datasource}"}, f"panel {panel['title']!r} uses datasource {ref}"


def test_job_and_instance_variables_list_tickwire_processes(dashboard):
    variables = _variables(dashboard)
    for name in ("job", "instance"):
        variable = variables.get(name, {})
        assert variable.get("type") == "query", f"no ${name} query variable"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert re.fullmatch(rf"label_values\(\s*tickwire_\w+(\{{[^}}]*\}})?\s*,\s*{name}\s*\)", variable["query"]), variable["query"]
        # "All" must become a regex the =~ selectors below accept.
        assert variable.get("includeAll") is False or variable.get("allValue") == ".*", name
    assert 'job=~"$job"' in variables["instance"]["query"], "instances of the jobs chosen"


def test_every_query_selects_job_and_instance(dashboard):
    for expr in _exprs(dashboard):
        selectors = re.findall(r"(?<![\w:])tickwire_[A-Za-z0-9_:]*(\{[^}]*\})?", expr)
        assert selectors, expr
        for selector in selectors:
            assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, f"not filtered by $job and $instance: {expr}"


def test_provisioned_datasource_is_the_compose_prometheus_and_the_default(dashboard):
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    # The variable has no current value: Grafana picks the default datasource of its type.
    kind = _variables(dashboard)["datasource"]["query"]
    assert any(
        s["url"].rstrip("/") == "http://prometheus:9090" and s["type"] == kind and s.get("isDefault") for s in sources
    ), "the compose Prometheus is not the default datasource"


def test_dashboard_provider_reads_where_compose_mounts_the_dashboards():
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "tickwire.yml")["providers"]
    paths = {p["options"]["path"].rstrip("/") for p in providers}
    mounts = {}
    for volume in compose()["services"]["grafana"]["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[source.rstrip("/")] = target.rstrip("/")
    assert mounts.get("./deploy/grafana/dashboards") in paths, f"providers read {paths}, compose mounts {mounts}"
    assert mounts.get("./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
