"""The Grafana dashboard (examples/grafana/kafka-filter-dashboard.json): every panel's query, run
against a real Prometheus scraping a real Envoy with the filter after real traffic, returns data.

The traffic covers what the panels show: librdkafka and kafka-python producers and consumer groups
(requests, latency, records per topic, client versions, committed lag), a producer held by a rate
limit (throttling), and a request with an API key the filter does not know (anomalies).
"""

from __future__ import annotations

import json
import socket

import pytest

from clients import (
    ConsumeChecker,
    KafkaPythonOps,
    kafka_python_produce,
    message_plan,
    rdkafka_consume_group,
    rdkafka_create_topic,
    rdkafka_produce,
)
from harness import REPO, request_frame
from prometheus import PrometheusServer

DASHBOARD = REPO / "examples" / "grafana" / "kafka-filter-dashboard.json"
# Grafana's range for rate(), longer than the whole test: a latency quantile over a window with
# no traffic in it is NaN, and the Produce traffic ends well before the last panel is checked.
RATE_INTERVAL = "10m"


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for t in panel["targets"]:
            out.append((panel["title"], t["expr"].replace("$__rate_interval", RATE_INTERVAL)))
    return out


def test_the_dashboard_is_well_formed():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"]
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_queries()) >= 8


def test_every_panel_query_returns_data(make_stack, tmp_path):
    seed = 6006
    plan = message_plan(seed, 400, 0, 2)
    size = sum(m.size for m in plan)
    config = {
        "client_metrics": {"max_clients": 50},
        "consumer_lag": {},
        # Held to a quarter of what it offers per second: throttled for a few seconds.
        "limits": [{"name": "dashboard-limit", "match": {"client_id": {"exact": "throttled-app"}},
                    "produce_bytes_per_second": {"rate": max(size // 4, 4096), "burst": max(size // 4, 4096)}}],
    }
    stack = make_stack("filter", config)
    with PrometheusServer(tmp_path, targets=[stack.envoy.admin_port]) as prom:
        prom.wait_for_scrape()
        rdkafka_create_topic(stack.bootstrap, "dashboard", 2)
        rdkafka_produce(stack.bootstrap, "dashboard", seed, plan, extra={"client.id": "orders-app"})
        checker = ConsumeChecker(seed, plan)
        rdkafka_consume_group(stack.bootstrap, "dashboard", "dashboard-group", checker,
                              extra={"client.id": "orders-reader"})
        checker.verify()
        kafka_python_produce(stack.bootstrap, "dashboard", seed + 1, plan, extra={"client_id": "throttled-app"})
        # More than the group committed: lag.
        KafkaPythonOps(stack.bootstrap, "orders-reader-2").consume("dashboard", "dashboard-group", 10)
        # An API key nobody knows: counted as an anomaly (the broker closes the connection).
        with socket.create_connection(("127.0.0.1", stack.envoy.listener_port), timeout=5) as s:
            s.sendall(request_frame(9999, 0, 1, "anomaly"))
        assert stack.envoy.settled_kafka_stats().get("kafka.limit.dashboard-limit.limit_throttled", 0) > 0
        for title, expr in dashboard_queries():
            result = prom.wait_for(expr, lambda r: bool(r) and any(v == v for _, v in r), timeout=40)
            print(f"{title}: {len(result)} series, e.g. {result[0]}")


def test_every_panel_query_is_valid_promql(tmp_path):
    """Prometheus accepts each query (on an empty database), so a typo fails here by name."""
    with PrometheusServer(tmp_path, targets=[1]) as prom:
        for title, expr in dashboard_queries():
            try:
                prom.query(expr)
            except Exception as e:  # noqa: BLE001 - reported with the panel's title
                pytest.fail(f"{title}: {expr}: {e}")
