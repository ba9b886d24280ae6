"""deploy/grafana: provisioning points where compose mounts the files, and every panel
queries metrics the code exports (or a documented future one)."""

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


def test_datasource_uid_matches_provisioning(dashboard):
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uids = {s["uid"] for s in sources}
    assert any(s["url"].rstrip("/") == "http://prometheus:9090" for s in sources), "datasource is not the compose Prometheus"
    for panel in _panels(dashboard):
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if isinstance(ref, dict):
                assert ref.get("uid") in uids, f"panel {panel['title']!r} uses datasource {ref}"


def test_dashboard_provider_reads_where_compose_mounts_the_dashboards():
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "tickwire.yml")["providers"]
    paths = {p["options"]["path"].rstrip("/") for p in providers}
    mounts = {}
    for volume in compose()["services"]["grafana"]["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[source.rstrip("/")] = target.rstrip("/")
    assert mounts.get("./deploy/grafana/dashboards") in paths, f"providers read {paths}, compose mounts {mounts}"
    assert mounts.get("./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
