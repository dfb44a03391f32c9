"""Fast checks of the harness itself (no processes): config rewriting, parsers, message plans."""

from __future__ import annotations

import json

import pytest

from clients import (
    CRATE_API_NAMES,
    MIB,
    ConsumeChecker,
    _produce_acks,
    message_headers,
    message_key,
    message_plan,
    message_value,
    rdkafka_to_crate,
)
from harness import (
    PromText,
    Stats,
    histogram_quantile,
    load_config,
    plugin_configuration,
    request_frame,
    rewrite_config,
)


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))
    else:
        yield prefix, d


@pytest.mark.parametrize("name", ["envoy.yaml", "tcp-proxy-only.yaml"])
def test_rewrite_touches_only_ports_wasm_and_plugin_config(name):
    base = load_config(name)
    out = rewrite_config(base, admin_port=1, listener_port=2, upstream_port=3, wasm_path="/abs/f.wasm",
                         plugin_config={"max_frame_bytes": 2048} if name == "envoy.yaml" else None)
    before, after = dict(_paths(base)), dict(_paths(out))
    assert before.keys() == after.keys()
    changed = {p for p in before if before[p] != after[p]}
    allowed = {
        ("admin", "address", "socket_address", "port_value"),
        ("static_resources", "listeners", 0, "address", "socket_address", "port_value"),
        ("static_resources", "clusters", 0, "load_assignment", "endpoints", 0, "lb_endpoints", 0,
         "endpoint", "address", "socket_address", "port_value"),
    }
    if name == "envoy.yaml":
        f = ("static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config", "config")
        allowed |= {f + ("vm_config", "code", "local", "filename"), f + ("configuration", "value")}
        assert json.loads(plugin_configuration(out)) == {"max_frame_bytes": 2048}
        assert json.loads(plugin_configuration(base))["on_frame_error"] == "close"
    assert changed == allowed


def test_stats_json_and_prometheus_parsing():
    doc = {"stats": [
        {"name": "wasmcustom.kafka.api.Produce.requests", "value": 3},
        {"name": "wasmcustom.kafka.connections_active", "value": 1},
        {"name": "server.version", "value": "text readout"},
        {"histograms": {"supported_quantiles": [50, 99], "computed_quantiles": [
            {"name": "wasmcustom.kafka.api.Produce.response_latency_us",
             "values": [{"interval": None, "cumulative": 10}, {"interval": None, "cumulative": 20}]}]}},
    ]}
    s = Stats.from_json(json.dumps(doc))
    assert s.kafka() == {"kafka.api.Produce.requests": 3, "kafka.connections_active": 1}
    assert s.kafka_histograms()["kafka.api.Produce.response_latency_us"][99]["cumulative"] == 20
    prom = PromText.parse(
        '# TYPE kafka_requests counter\n'
        'kafka_requests{kafka_api="Produce"} 3\n'
        'kafka_connections_active{} 0\n'
        '# TYPE kafka_lat histogram\n'
        'kafka_lat_bucket{kafka_api="Produce",le="1"} 1\n'
        'kafka_lat_bucket{kafka_api="Produce",le="10"} 3\n'
        'kafka_lat_bucket{kafka_api="Produce",le="+Inf"} 4\n')
    assert prom.value("kafka_requests", kafka_api="Produce") == 3
    assert prom.value("kafka_connections_active") == 0
    assert prom.types == {"kafka_requests": "counter", "kafka_lat": "histogram"}
    buckets = prom.histogram("kafka_lat", kafka_api="Produce")
    assert buckets == [(1.0, 1), (10.0, 3), (float("inf"), 4)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(5.5)
    assert histogram_quantile(buckets, 0.99) == 10.0


def test_librdkafka_names_map_to_the_crate():
    assert rdkafka_to_crate("ApiVersion") == "ApiVersions"
    assert rdkafka_to_crate("Produce") == "Produce"
    assert rdkafka_to_crate("GetTelemetrySubscriptions") == "GetTelemetrySubscriptions"
    assert rdkafka_to_crate("ElectLeadersRequest") == "ElectLeaders"
    assert rdkafka_to_crate("AlterIsrRequest") == "AlterPartition"
    assert rdkafka_to_crate("Unknown-62?") == "BrokerRegistration"
    assert rdkafka_to_crate("Unknown-9999?") == "unknown"
    assert rdkafka_to_crate("LeaderAndIsr") == "unknown"   # key 4: not in the crate
    assert len(CRATE_API_NAMES) == len(set(CRATE_API_NAMES.values()))


def test_produce_acks_scanner():
    for version, header_flexible in ((3, False), (8, False)):
        body = (-1).to_bytes(2, "big", signed=True) + (0).to_bytes(2, "big") + b"rest"
        frame = request_frame(0, version, 1, "c", body, flexible=header_flexible)[4:]
        assert _produce_acks(frame) == 0
    # v9+: flexible header (tagged fields) and compact nullable transactional id.
    body = b"\x03tx" + (-1).to_bytes(2, "big", signed=True) + b"rest"
    frame = request_frame(0, 9, 1, "c", body, flexible=True)[4:]
    assert _produce_acks(frame) == -1


def test_message_plan_and_checker():
    plan = message_plan(7, 1000, 5, 4)
    sizes = sorted(m.size for m in plan)
    assert sizes[-1] == MIB and sizes[-2] == MIB and sizes[0] >= 100
    assert sum(1 for m in plan if m.size > 10 * 1024) == 5
    assert message_plan(7, 1000, 5, 4) == plan
    checker = ConsumeChecker(7, plan[:3])
    for m in plan[:3]:
        checker.add(m.partition, message_key(7, m.seq), message_value(7, m.seq, m.size), message_headers(7, m.seq))
    checker.verify()
    bad = ConsumeChecker(7, plan[:2])
    v = bytearray(message_value(7, 0, plan[0].size))
    v[-1] ^= 1
    bad.add(plan[0].partition, message_key(7, 0), bytes(v), message_headers(7, 0))
    with pytest.raises(AssertionError, match="value differs"):
        bad.verify()
