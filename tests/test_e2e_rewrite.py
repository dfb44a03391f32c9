"""Topic, consumer-group and transactional-id name conversion (`rules`), end to end.

Real Envoy 1.40 + the built filter + a real tansu broker + real clients (librdkafka through
confluent-kafka, and kafka-python; every scenario a client library can express runs with both).
What is physically on the broker is always read over a direct connection to the broker
(clients.BrokerView), never through Envoy: tansu advertises Envoy's listener, so a real client
would be routed back through the filter.

- Canary: `checkout-canary` produces to and consumes `orders`, physically `orders-canary`, and sees
  only its own `orders` (metadata, delivery reports, consumed messages, committed offsets, groups);
  production (`checkout`) on the same Envoy at the same time is untouched.
- Blue/green: the listener comes from a file through LDS; replacing the file switches `orders` from
  `orders-blue` to `orders-green` for new connections without restarting Envoy.
- Tenants: `team-a-*` and `team-b-*` share one broker with `team-a.` / `team-b.` prefixes and cannot
  list, produce to, fetch from, describe or commit on each other's topics; APIs the filter does not
  rewrite are refused.
- Transactional ids: the same id used under two rules is two ids on the broker (no fencing).
- Refusals on the wire: ApiVersions under a rule hides what the filter cannot rewrite; a raw client
  that sends such a request anyway gets an error response (or, without a schema to answer with, a
  closed connection) and the broker never sees it; `"unsupported_apis": "pass_through"` forwards it.
- Committed offsets survive a consumer restart under a rule.
- Bad rules stop Envoy at startup, naming the rule.
- A client under no rule is forwarded byte for byte even when rules are configured.

tansu 0.6 facts these tests rely on (checked directly against the broker): topics are auto-created
(4 partitions) by Metadata requests that allow it and by producers; CreateTopics stores topic
configs and DescribeConfigs returns them (config_source DEFAULT_CONFIG); IncrementalAlterConfigs,
DescribeAcls and DescribeTopicPartitions are advertised; ListOffsets(latest) returns the last
batch's base offset + 1 (so BrokerView reads high watermarks from Fetch); a Fetch with
max_wait_ms=0 is answered with no partitions.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess

import pytest

from clients import (
    CLIENT_OPS,
    BrokerView,
    RawKafka,
    metadata_partitions,
)
from harness import HarnessError, envoy_bin, wait_until

CLIENTS = list(CLIENT_OPS)

CANARY_RULE = {
    "name": "checkout-canary",
    "match": {"client_id": {"exact": "checkout-canary"}},
    "topics": {"map": {"orders": "orders-canary"}},
    "groups": {"add_suffix": "-canary"},
}
TEAM_A_RULE = {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}
TEAM_B_RULE = {"name": "team-b", "match": {"client_id": {"prefix": "team-b-"}}, "topics": {"prefix": "team-b."}}
RULES = {"rules": [CANARY_RULE, TEAM_A_RULE, TEAM_B_RULE]}

BLUE_GREEN_RULE = {"name": "checkout-blue-green", "match": {"client_id": {"prefix": "checkout"}}, "groups": "unchanged"}
BLUE = {"rules": [dict(BLUE_GREEN_RULE, topics={"map": {"orders": "orders-blue"}})]}
GREEN = {"rules": [dict(BLUE_GREEN_RULE, topics={"map": {"orders": "orders-green"}})]}

# Counters that must stay zero under well-formed client traffic.
ANOMALIES = (
    "kafka.requests_unknown_api",
    "kafka.requests_unknown_version",
    "kafka.frames_undecodable",
    "kafka.frames_oversized",
    "kafka.frames_invalid_size",
    "kafka.requests_unanswered",
    "kafka.inflight_overflow",
    "kafka.connections_closed_by_policy",
    "kafka.connections_bypassed",
    "kafka.rewrite.errors",
)

CLUSTER_AUTHORIZATION_FAILED = 31


def values(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i:03d}".encode() for i in range(n)]


def ops(client: str, stack, client_id: str):
    return CLIENT_OPS[client](stack.bootstrap, client_id)


def both(*calls):
    """Run callables at once (consumer group joins on tansu take seconds each); return results."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def settled_stats(envoy, timeout: float = 30.0) -> dict[str, float]:
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, timeout,
               what="all client connections to close (kafka.connections_active == 0)")
    return envoy.settled_kafka_stats(timeout=timeout)


def assert_clean_rewrites(stats: dict[str, float], refused_ok: bool = False) -> None:
    bad = {k: stats[k] for k in ANOMALIES if stats.get(k)}
    assert not bad, f"anomalies under well-formed client traffic: {bad}"
    assert stats.get("kafka.rewrite.requests", 0) > 0, stats
    assert stats.get("kafka.rewrite.responses", 0) > 0, stats
    if not refused_ok:
        assert not stats.get("kafka.rewrite.refused"), \
            f"the filter refused requests of well-behaved clients: {stats.get('kafka.rewrite.refused')}"


def per_partition_counts(delivered) -> dict[int, int]:
    out: dict[int, int] = {}
    for d in delivered:
        out[d.partition] = max(out.get(d.partition, 0), d.offset + 1)
    return out


def assert_on_broker(view: BrokerView, physical: str, delivered, expected_values: list[bytes]) -> None:
    """The physical topic holds exactly these values, each at the partition and offset its delivery
    report gave."""
    records = [r for r in view.fetch_all(physical) if not r.control]
    assert sorted(r.value for r in records) == sorted(expected_values), \
        f"{physical} on the broker holds {sorted(r.value for r in records)}"
    at = {(r.partition, r.offset): r.value for r in records}
    for d in delivered:
        assert at.get((d.partition, d.offset)) == d.value, \
            f"delivery report {d} does not match the broker's {physical}"


# ------------------------------------------------------------------------------------------
# 1. canary next to production


@pytest.mark.parametrize("client", CLIENTS)
def test_canary_and_production_side_by_side(make_stack, client):
    """checkout-canary and checkout, same topic and group names, same Envoy, at the same time:
    the canary's are physically orders-canary / orders-app-canary and it never sees production's;
    production is untouched."""
    stack = make_stack("filter", plugin_config=RULES)
    prod = ops(client, stack, "checkout")
    canary = ops(client, stack, "checkout-canary")

    # Different partition counts tell the two physical topics apart in what each client sees.
    prod.create_topic("orders", 3)
    canary.create_topic("orders", 2)
    with BrokerView(stack.broker.port) as view:
        assert view.topics() == {"orders": 3, "orders-canary": 2}

    # Metadata: the canary's `orders` is orders-canary; production's `orders` is hidden from it.
    assert canary.list_topics() == {"orders": 2}
    assert prod.list_topics() == {"orders": 3, "orders-canary": 2}   # untouched: physical names

    canary_values, prod_values = values("canary", 12), values("production", 15)
    canary_delivered, prod_delivered = both(lambda: canary.produce("orders", canary_values),
                                            lambda: prod.produce("orders", prod_values))
    assert {d.topic for d in canary_delivered} == {"orders"}
    assert {d.partition for d in canary_delivered} <= {0, 1}
    assert {d.topic for d in prod_delivered} == {"orders"}
    with BrokerView(stack.broker.port) as view:
        assert_on_broker(view, "orders-canary", canary_delivered, canary_values)
        assert_on_broker(view, "orders", prod_delivered, prod_values)

    # The same logical group name on both sides: two physical groups, each its own messages.
    (canary_got, canary_committed), (prod_got, prod_committed) = both(
        lambda: canary.consume("orders", "orders-app", len(canary_values)),
        lambda: prod.consume("orders", "orders-app", len(prod_values)))
    assert sorted(m.value for m in canary_got) == sorted(canary_values)
    assert {m.topic for m in canary_got} == {"orders"}
    assert sorted(m.value for m in prod_got) == sorted(prod_values)
    canary_counts = per_partition_counts(canary_delivered)
    prod_counts = per_partition_counts(prod_delivered)
    assert canary_committed == {("orders", p): n for p, n in canary_counts.items()}
    assert prod_committed == {("orders", p): n for p, n in prod_counts.items()}

    with BrokerView(stack.broker.port) as view:
        assert {"orders-app", "orders-app-canary"} <= view.groups()
        assert view.committed("orders-app-canary", "orders-canary", 2) == canary_counts
        prod_group = view.committed("orders-app", "orders", 3)
        assert {p: prod_group[p] for p in prod_counts} == prod_counts
        # Neither side committed on the other's topic.
        assert all(o <= 0 for o in view.committed("orders-app-canary", "orders", 3).values())
        assert all(o <= 0 for o in view.committed("orders-app", "orders-canary", 2).values())

    # Groups and committed offsets as each side sees them.
    assert canary.list_groups() == {"orders-app"}
    assert {"orders-app", "orders-app-canary"} <= prod.list_groups()
    assert canary.committed("orders-app", "orders", 2) == {("orders", p): n for p, n in canary_counts.items()}

    assert_clean_rewrites(settled_stats(stack.envoy))


@pytest.mark.parametrize("client", CLIENTS)
def test_mixed_sizes_byte_exact_under_a_rule(make_stack, client):
    """The integrity workload of test_e2e_traffic (mixed sizes up to exactly 1 MiB, keys, headers,
    order per partition) under a tenant rule: Produce requests rewritten from their head, Fetch
    responses with the mapped name, all byte-exact; the physical topic holds every message."""
    from clients import (ConsumeChecker, kafka_python_consume, kafka_python_create_topic, kafka_python_produce,
                         message_plan, rdkafka_consume_group, rdkafka_create_topic, rdkafka_produce)

    stack = make_stack("filter", plugin_config=RULES)
    seed, partitions = 3003, 3
    plan = message_plan(seed, 1000, 4, partitions)
    assert max(m.size for m in plan) == 1024 * 1024
    checker = ConsumeChecker(seed, plan)
    if client == "rdkafka":
        extra = {"client.id": "team-a-integrity"}
        rdkafka_create_topic(stack.bootstrap, "integrity", partitions, extra=extra)
        rdkafka_produce(stack.bootstrap, "integrity", seed, plan, extra=extra)
        rdkafka_consume_group(stack.bootstrap, "integrity", "integrity-group", checker, extra=extra, timeout=60)
    else:
        extra = {"client_id": "team-a-integrity"}
        kafka_python_create_topic(stack.bootstrap, "integrity", partitions, extra=extra)
        kafka_python_produce(stack.bootstrap, "integrity", seed, plan, extra=extra)
        kafka_python_consume(stack.bootstrap, "integrity", partitions, checker, group="integrity-group",
                             timeout=60, extra=extra)
    checker.verify()
    with BrokerView(stack.broker.port) as view:
        assert view.topics() == {"team-a.integrity": partitions}
        counts = {p: sum(1 for m in plan if m.partition == p) for p in range(partitions)}
        assert view.end_offsets("team-a.integrity", partitions) == counts
        assert "team-a.integrity-group" in view.groups()
    assert_clean_rewrites(settled_stats(stack.envoy))


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_request_with_mapped_and_unmapped_topics(make_stack, client):
    """The canary produces to `orders` (mapped) and `payments` (not mapped) with one producer.
    kafka-python puts both topics in one Produce request (v9, checked with a tap), which the filter
    holds whole and rewrites one name of; librdkafka 2.16 sends one Produce request per partition,
    so for it this is two kinds of Produce on one connection."""
    stack = make_stack("filter", plugin_config=RULES)
    canary = ops(client, stack, "checkout-canary")
    with BrokerView(stack.broker.port) as view:
        view.create_topic("orders-canary", 1)
        view.create_topic("payments", 1)
    orders, payments = values("canary-order", 20), values("canary-payment", 20)
    delivered = canary.produce_to([m for pair in zip((("orders", v) for v in orders),
                                                     (("payments", v) for v in payments)) for m in pair],
                                  partition=0, linger_ms=50)
    assert sorted({d.topic for d in delivered}) == ["orders", "payments"]
    with BrokerView(stack.broker.port) as view:
        assert view.values("orders-canary") == orders
        assert view.values("payments") == payments
        assert "orders" not in view.topics()
    assert_clean_rewrites(settled_stats(stack.envoy))


# ------------------------------------------------------------------------------------------
# 2. blue/green through LDS


@pytest.mark.parametrize("client", CLIENTS)
def test_blue_green_switch_through_lds(make_lds_stack, client):
    """The listener (with the filter's rules) comes from a file; replacing the file atomically
    switches `orders` from orders-blue to orders-green for NEW connections, with no restart.

    Connections that were open before the switch keep the old filter chain, and so the old rules,
    until they close (or Envoy's drain time ends them): clients must reconnect to switch. The raw
    connection below shows it.
    """
    stack = make_lds_stack(BLUE)
    envoy = stack.envoy
    pid = envoy.process.pid
    with BrokerView(stack.broker.port) as view:
        view.create_topic("orders-blue", 1)
        view.create_topic("orders-green", 2)

    blue_values, green_values = values("blue", 8), values("green", 9)
    blue_delivered = ops(client, stack, "checkout").produce("orders", blue_values)
    assert {d.topic for d in blue_delivered} == {"orders"}
    with BrokerView(stack.broker.port) as view:
        assert_on_broker(view, "orders-blue", blue_delivered, blue_values)

    with RawKafka(envoy.listener_port, client_id="checkout-long-lived") as old:
        assert metadata_partitions(old, "orders") == {"orders": 1}   # orders-blue
        envoy.update_listener(GREEN)
        assert envoy.process.pid == pid and envoy.poll() is None, "Envoy restarted"
        # Only the filter chain changed: the listening socket was kept (no refused connections).
        assert envoy.lds_counters()["listener_in_place_updated"] == 1, envoy.lds_counters()
        # The connection accepted under the blue listener still has the blue rules.
        assert metadata_partitions(old, "orders") == {"orders": 1}
        with RawKafka(envoy.listener_port, client_id="checkout-new") as new:
            assert metadata_partitions(new, "orders") == {"orders": 2}   # orders-green

    green = ops(client, stack, "checkout")
    green_delivered = green.produce("orders", green_values)
    assert {d.topic for d in green_delivered} == {"orders"}
    assert green.list_topics()["orders"] == 2
    with BrokerView(stack.broker.port) as view:
        assert_on_broker(view, "orders-green", green_delivered, green_values)
        assert_on_broker(view, "orders-blue", blue_delivered, blue_values)   # nothing more
        assert "orders" not in view.topics()   # the logical name never reached the broker

    # A listener with bad rules is rejected by Envoy; the green one keeps serving.
    bad = {"rules": [{"name": "broken", "topics": {"map": {"orders": "orders"}}, "groups": "unchanged"}]}
    with pytest.raises(HarnessError, match="rejected"):
        envoy.update_listener(bad, timeout=20)
    assert "rules[0] (`broken`)" in envoy.log_text()
    assert envoy.process.pid == pid and envoy.poll() is None
    with RawKafka(envoy.listener_port, client_id="checkout-after-bad") as raw:
        assert metadata_partitions(raw, "orders") == {"orders": 2}
    stats = settled_stats(envoy)
    assert envoy.lds_counters()["lds.update_rejected"] == 1
    assert_clean_rewrites(stats)


# ------------------------------------------------------------------------------------------
# 3. tenants


@pytest.mark.parametrize("client", CLIENTS)
def test_tenants_are_isolated(make_stack, client):
    stack = make_stack("filter", plugin_config=RULES)
    a = ops(client, stack, "team-a-app")
    b = ops(client, stack, "team-b-app")

    b.create_topic("events", 2, {"retention.ms": "222222"})
    a.create_topic("events", 1, {"retention.ms": "111111"})
    with BrokerView(stack.broker.port) as view:
        assert view.topics() == {"team-a.events": 1, "team-b.events": 2}
        assert view.topic_configs("team-b.events").get("retention.ms") == "222222"

    a_values, b_values = values("team-a", 10), values("team-b", 11)
    a_delivered, b_delivered = both(lambda: a.produce("events", a_values), lambda: b.produce("events", b_values))
    assert {d.topic for d in a_delivered} == {d.topic for d in b_delivered} == {"events"}
    (a_got, a_committed), (b_got, b_committed) = both(lambda: a.consume("events", "g", len(a_values)),
                                                      lambda: b.consume("events", "g", len(b_values)))
    assert sorted(m.value for m in a_got) == sorted(a_values)
    assert sorted(m.value for m in b_got) == sorted(b_values)
    assert {m.topic for m in a_got + b_got} == {"events"}
    assert {t for t, _ in list(a_committed) + list(b_committed)} == {"events"}
    b_counts = per_partition_counts(b_delivered)
    with BrokerView(stack.broker.port) as view:
        assert_on_broker(view, "team-a.events", a_delivered, a_values)
        assert_on_broker(view, "team-b.events", b_delivered, b_values)
        assert {"team-a.g", "team-b.g"} <= view.groups()
        assert view.committed("team-b.g", "team-b.events", 2) == b_counts

    # Listing: each sees its own, without the prefix.
    assert a.list_topics() == {"events": 1}
    assert b.list_topics() == {"events": 2}
    assert a.list_groups() == {"g"}
    assert b.list_groups() == {"g"}
    # Its own configuration, by its own name.
    assert a.describe_configs("events").get("retention.ms") == "111111"

    # team-a names team-b's physical topic: the filter prefixes it (team-a.team-b.events), so it
    # is team-a's own (absent, or created under team-a's prefix), never team-b's.
    try:
        cfg = a.describe_configs("team-b.events")
    except Exception as e:  # noqa: BLE001 - an error is an acceptable answer
        cfg = {"error": repr(e)}
    assert "222222" not in json.dumps(cfg), f"team-a read team-b's configuration: {cfg}"
    got, _errors = a.fetch_assigned("team-b.events", 2, seconds=2.0)
    assert not [m for m in got if m.value and m.value.startswith(b"team-b")], "team-a fetched team-b's messages"
    try:
        a.produce("team-b.events", [b"team-a-intruder"], timeout=15)
    except Exception:  # noqa: BLE001 - refused is fine too; what matters is where it did not land
        pass
    for group in ("g", "team-b.g"):
        try:
            a.commit_offsets(group, "team-b.events", {0: 1, 1: 1})
        except Exception:  # noqa: BLE001 - likewise
            pass

    with BrokerView(stack.broker.port) as view:
        assert_on_broker(view, "team-b.events", b_delivered, b_values)   # nothing added
        assert view.committed("team-b.g", "team-b.events", 2) == b_counts   # nothing moved
        assert view.topic_configs("team-b.events").get("retention.ms") == "222222"
        topics = view.topics()
        assert {t for t in topics if t.startswith("team-b.")} == {"team-b.events"}, topics
        assert not {t for t in topics if not t.startswith(("team-a.", "team-b."))}, topics
        if "team-a.team-b.events" in view.topics():
            assert all(v == b"team-a-intruder" for v in view.values("team-a.team-b.events"))
    # team-b still sees only its own.
    assert b.list_topics() == {"events": 2}
    assert b.list_groups() == {"g"}
    assert_clean_rewrites(settled_stats(stack.envoy))


@pytest.mark.parametrize("client", CLIENTS)
def test_tenant_admin_api_the_filter_cannot_rewrite_fails(make_stack, client):
    """Altering a topic configuration (IncrementalAlterConfigs, or AlterConfigs) is not rewritten:
    under a rule it fails, either refused by the filter (kafka.rewrite.refused) or failed by the
    client itself because the filter's ApiVersions answer no longer lists the API. A client under
    no rule does the same through the same Envoy successfully."""
    stack = make_stack("filter", plugin_config=RULES)
    b = ops(client, stack, "team-b-app")
    b.create_topic("events", 1, {"retention.ms": "222222"})
    before = stack.envoy.kafka_stats()
    with pytest.raises(Exception) as failure:   # noqa: PT011 - each library raises its own type
        b.alter_topic_config("events", "retention.ms", "1000")
    message = repr(failure.value)
    refused = stack.envoy.kafka_stats().get("kafka.rewrite.refused", 0) - before.get("kafka.rewrite.refused", 0)
    local_unsupported = any(s in message for s in ("UNSUPPORTED_FEATURE", "nsupported", "IncompatibleBrokerVersion"))
    assert refused > 0 or local_unsupported, (
        f"alter config failed for another reason than the rule: {message} (refused counter +{refused})")
    with BrokerView(stack.broker.port) as view:
        assert view.topic_configs("team-b.events").get("retention.ms") == "222222"
    # The same change by an operator under no rule goes through.
    ops(client, stack, "platform-admin").alter_topic_config("team-b.events", "retention.ms", "333333")
    with BrokerView(stack.broker.port) as view:
        assert view.topic_configs("team-b.events").get("retention.ms") == "333333"


def test_unsupported_apis_refused_on_the_wire(make_stack):
    """With a raw client that ignores ApiVersions: requests of APIs the filter does not rewrite are
    answered by the filter with an error (CLUSTER_AUTHORIZATION_FAILED where the response has a
    top-level error code) and never reach the broker; ApiVersions under a rule does not list them."""
    from kafka.protocol.admin import DescribeAclsRequest, IncrementalAlterConfigsRequest
    from kafka.protocol.metadata import ApiVersionsRequest

    stack = make_stack("filter", plugin_config=RULES)
    with BrokerView(stack.broker.port) as view:
        view.create_topic("team-b.events", 1, {"retention.ms": "222222"})
    port = stack.envoy.listener_port

    def advertised(client_id: str) -> set[int]:
        with RawKafka(port, client_id=client_id) as raw:
            return {k.api_key for k in raw.call(ApiVersionsRequest(), 0).api_keys}

    unruled, tenant = advertised("platform-admin"), advertised("team-b-raw")
    # tansu advertises IncrementalAlterConfigs (44), DescribeAcls (29), DescribeTopicPartitions (75).
    assert {44, 29, 75} <= unruled, sorted(unruled)
    assert not {44, 29, 75} & tenant, sorted(tenant)
    assert {0, 1, 3, 8, 9, 10, 11, 12, 13, 14, 18} <= tenant, sorted(tenant)

    before = stack.envoy.kafka_stats()
    R = IncrementalAlterConfigsRequest.AlterConfigsResource
    alter = IncrementalAlterConfigsRequest(resources=[R(resource_type=2, resource_name="events", configs=[
        R.AlterableConfig(name="retention.ms", config_operation=0, value="1000")])], validate_only=False)
    acls = DescribeAclsRequest(resource_type_filter=2, resource_name_filter="events", pattern_type_filter=3,
                               principal_filter=None, host_filter=None, operation=1, permission_type=1)
    with RawKafka(port, client_id="team-b-raw") as raw:
        alter_resp = raw.call(alter, 0)
        acls_resp = raw.call(acls, 1)
        # The connection still works after the refusals.
        assert metadata_partitions(raw, "events") == {"events": 1}
    assert acls_resp.error_code == CLUSTER_AUTHORIZATION_FAILED, acls_resp
    # IncrementalAlterConfigs has only per-resource error codes: the refusal carries no resource.
    assert all(r.error_code == CLUSTER_AUTHORIZATION_FAILED for r in alter_resp.responses), alter_resp
    with BrokerView(stack.broker.port) as view:
        assert view.topic_configs("team-b.events").get("retention.ms") == "222222"
    after = stack.envoy.kafka_stats()
    assert after.get("kafka.rewrite.refused", 0) - before.get("kafka.rewrite.refused", 0) == 2


@pytest.mark.parametrize("client", CLIENTS)
def test_same_transactional_id_does_not_collide_across_rules(make_stack, client):
    """team-a and team-b (prefix rules), and production and the canary (whose transactional ids
    follow its groups' `-canary` suffix), each pair using ONE transactional id. On the broker a
    second InitProducerId for an id fences the first producer (tansu does: checked directly, the
    first one's transaction is aborted and its commit times out); under the rules the ids are
    different on the broker, so all four producers initialise first and all four commit."""
    stack = make_stack("filter", plugin_config=RULES)
    cases = [  # (client id, logical topic, physical topic, transactional id)
        ("team-a-app", "events", "team-a.events", "tx"),
        ("team-b-app", "events", "team-b.events", "tx"),
        ("checkout", "orders", "orders", "orders-tx"),
        ("checkout-canary", "orders", "orders-canary", "orders-tx"),
    ]
    with BrokerView(stack.broker.port) as view:
        for _, _, physical, _ in cases:
            view.create_topic(physical, 1)
    producers = [ops(client, stack, cid).transactional_producer(txid) for cid, _, _, txid in cases]
    try:
        for p in producers:      # all initialised before any commits: a collision would fence
            p.init()
        for p, (cid, topic, _, _) in zip(producers, cases):
            p.send(topic, [f"{cid}-txn-{i}".encode() for i in range(3)])
        for p in producers:
            p.commit()
    finally:
        for p in producers:
            p.close()
    with BrokerView(stack.broker.port) as view:
        for cid, _, physical, _ in cases:
            assert view.values(physical) == [f"{cid}-txn-{i}".encode() for i in range(3)], physical
            assert view.markers(physical) == ["commit"], (physical, view.markers(physical))
    assert_clean_rewrites(settled_stats(stack.envoy))


LOCAL_CIDR_RULES = {"rules": [{"name": "loopback", "match": {"source_cidrs": ["127.0.0.0/8"]},
                                "topics": {"prefix": "local."}}]}


@pytest.mark.parametrize("matched_by", ["client-id", "source-cidr"])
@pytest.mark.parametrize("api_key, version", [(10000, 0), (3, 99), (44, 99)],
                         ids=["unknown-api-key", "Metadata-v99", "IncrementalAlterConfigs-v99"])
def test_request_without_schema_under_a_rule_closes_the_connection(make_envoy, api_key, version, matched_by):
    """A request the filter has no schema for (an unknown API key, a version newer than it knows)
    cannot be answered with an error response of its type: under a rejecting rule nothing of it
    reaches the broker and the connection is closed. (A fake broker that never closes anything,
    so the close is the filter's.) The rule matches by client id (team-a-) or by source address."""
    from harness import RecordingServer, request_frame, wait_closed

    with RecordingServer(respond=lambda frame: None) as server:
        envoy = make_envoy(server.port, plugin_config=RULES if matched_by == "client-id" else LOCAL_CIDR_RULES)
        before = envoy.kafka_stats()
        with RawKafka(envoy.listener_port, client_id="team-a-raw") as raw:
            raw.sock.sendall(request_frame(api_key, version, 99, "team-a-raw", b"\x00" * 16))
            assert wait_closed(raw.sock, timeout=5) == b""
        wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 10,
                   what="the connection to close")
        upstream = b"".join(server.received(i) for i in range(len(server.connections)))
        after = envoy.kafka_stats()
    assert api_key.to_bytes(2, "big") + version.to_bytes(2, "big") not in upstream, \
        f"the request reached the broker: {upstream.hex()}"
    assert after.get("kafka.rewrite.refused", 0) - before.get("kafka.rewrite.refused", 0) == 1, after


def test_rule_matched_by_source_address(make_stack):
    """`match.source_cidrs`: Envoy's source address of the connection selects the rule."""
    stack = make_stack("filter", plugin_config=LOCAL_CIDR_RULES)
    with BrokerView(stack.broker.port) as view:
        view.create_topic("local.events", 2)
        view.create_topic("events", 1)
    with RawKafka(stack.envoy.listener_port, client_id=None) as raw:
        assert metadata_partitions(raw, "events") == {"events": 2}    # local.events


def test_librdkafka_all_topics_metadata_request_under_a_rule(make_stack):
    """librdkafka 2.16.1 asks for all topics with a Metadata v12 request whose body carries 3 bytes
    after the message (its 4-byte array-count placeholder holds the 1-byte compact null array):
    `00 00 00 00 01 00 00` (topics null, allow_auto_topic_creation false, include_topic_authorized_
    operations false, no tagged fields; then `01 00 00`). Kafka brokers (and tansu) read the message
    and ignore the rest; under a rule the filter must answer it too (AdminClient.list_topics() and
    librdkafka's metadata refreshes depend on it). These are the exact bytes librdkafka sent
    (captured), with this test's client id."""
    from harness import request_frame
    from kafka.protocol.metadata import MetadataResponse

    stack = make_stack("filter", plugin_config=RULES)
    with BrokerView(stack.broker.port) as view:
        view.create_topic("team-a.events", 1)
        view.create_topic("team-b.events", 2)
    body = bytes.fromhex("00000000010000")
    with RawKafka(stack.envoy.listener_port, client_id="team-a-raw") as raw:
        raw.sock.sendall(request_frame(3, 12, 3, "team-a-raw", body, flexible=True))
        response = MetadataResponse.decode(raw.recv_frame(), version=12, header=True)
    assert response.header.correlation_id == 3
    assert {t.name: (t.error_code, len(t.partitions)) for t in response.topics} == {"events": (0, 1)}, response
    stats = stack.envoy.kafka_stats()
    assert not stats.get("kafka.rewrite.errors") and not stats.get("kafka.rewrite.refused"), stats


def test_pass_through_rule_forwards_unsupported_apis(make_stack):
    """`"unsupported_apis": "pass_through"`: APIs the filter cannot rewrite reach the broker
    unchanged (physical names: the client must name team-b.events itself) and ApiVersions is not
    limited."""
    from kafka.protocol.admin import IncrementalAlterConfigsRequest
    from kafka.protocol.metadata import ApiVersionsRequest

    trusted = dict(TEAM_B_RULE, name="team-b-ops", match={"client_id": {"exact": "team-b-ops"}},
                   unsupported_apis="pass_through")
    stack = make_stack("filter", plugin_config={"rules": [trusted, TEAM_A_RULE, TEAM_B_RULE]})
    with BrokerView(stack.broker.port) as view:
        view.create_topic("team-b.events", 1, {"retention.ms": "222222"})
    before = stack.envoy.kafka_stats()
    R = IncrementalAlterConfigsRequest.AlterConfigsResource
    alter = IncrementalAlterConfigsRequest(resources=[R(resource_type=2, resource_name="team-b.events", configs=[
        R.AlterableConfig(name="retention.ms", config_operation=0, value="444444")])], validate_only=False)
    with RawKafka(stack.envoy.listener_port, client_id="team-b-ops") as raw:
        assert 44 in {k.api_key for k in raw.call(ApiVersionsRequest(), 0).api_keys}
        # Rewritten APIs are still rewritten for it: `events` is team-b.events.
        assert metadata_partitions(raw, "events") == {"events": 1}
        resp = raw.call(alter, 0)
    assert [(r.error_code, r.resource_name) for r in resp.responses] == [(0, "team-b.events")], resp
    with BrokerView(stack.broker.port) as view:
        assert view.topic_configs("team-b.events").get("retention.ms") == "444444"
    after = stack.envoy.kafka_stats()
    assert not after.get("kafka.rewrite.refused", 0) - before.get("kafka.rewrite.refused", 0)


# ------------------------------------------------------------------------------------------
# 4. committed offsets survive a consumer restart


RESTART_CASES = {
    # rule: (client id, logical topic, physical topic, physical group of logical group "resume")
    "canary": ("checkout-canary", "orders", "orders-canary", "resume-canary"),
    "tenant": ("team-a-app", "events", "team-a.events", "team-a.resume"),
}


def consume_half_restart_resume(stack, client: str, rule: str) -> None:
    client_id, topic, physical_topic, physical_group = RESTART_CASES[rule]
    c = ops(client, stack, client_id)
    c.create_topic(topic, 1)
    vals = values(f"resume-{rule}", 20)
    c.produce(topic, vals, partition=0)

    first, committed = c.consume(topic, "resume", 10)
    assert [m.value for m in first] == vals[:10], rule
    assert committed == {(topic, 0): 10}, rule
    with BrokerView(stack.broker.port) as view:
        assert view.committed(physical_group, physical_topic, 1) == {0: 10}, rule

    # A new consumer (new connections) in the same group starts at the committed offset.
    second, committed = c.consume(topic, "resume", 10)
    assert [m.offset for m in second] == list(range(10, 20)), rule
    assert [m.value for m in second] == vals[10:], rule
    assert committed == {(topic, 0): 20}, rule
    with BrokerView(stack.broker.port) as view:
        assert view.committed(physical_group, physical_topic, 1) == {0: 20}, rule
    assert c.committed("resume", topic, 1) == {(topic, 0): 20}, rule


@pytest.mark.parametrize("client", CLIENTS)
def test_group_resumes_at_committed_offset_after_restart(make_stack, client):
    """Consume half, commit, close; a new consumer in the same group resumes at the committed
    offset: under the canary rule and under a tenant rule (both at once, on one Envoy)."""
    stack = make_stack("filter", plugin_config=RULES)
    both(*(lambda rule=rule: consume_half_restart_resume(stack, client, rule) for rule in RESTART_CASES))
    assert_clean_rewrites(settled_stats(stack.envoy))


# ------------------------------------------------------------------------------------------
# 5. bad rules stop Envoy


def _rule(name: str, **kw) -> dict:
    return {"name": name, **kw}


BAD_RULES = [
    pytest.param([_rule("all-teams", match={"client_id": {"prefix": "team-"}}, topics={"prefix": "t."}),
                  _rule("team-a", match={"client_id": {"prefix": "team-a-"}}, topics={"prefix": "team-a."})],
                 "rules[1] (`team-a`)", "covered by the earlier rule `all-teams`", id="overlapping"),
    pytest.param([CANARY_RULE,
                  _rule("payments", match={"client_id": {"exact": "pay"}},
                        topics={"map": {"orders": "x", "payments": "x"}}, groups="unchanged")],
                 "rules[1] (`payments`)", "both map to `x`", id="colliding-map"),
    pytest.param([_rule("canary", match={"client_id": {"exact": "c"}},
                        topics={"map": {"orders": "orders canary"}}, groups={"add_suffix": "-c"})],
                 "rules[0] (`canary`)", "contains ` `", id="invalid-topic-name"),
    pytest.param([_rule("canary", match={"client_id": {"exact": "c"}}, topics={"map": {"orders": "orders-c"}})],
                 "rules[0] (`canary`)", "`groups` must be set", id="map-without-groups"),
    pytest.param([TEAM_A_RULE, dict(TEAM_B_RULE, name="team-a")],
                 "rules[1] (`team-a`)", "same `name`", id="duplicate-name"),
    pytest.param([_rule("re", match={"client_id": {"regex": "team-("}}, topics={"prefix": "t."})],
                 "rules[0] (`re`)", "match.client_id.regex", id="bad-regex"),
]


@pytest.mark.parametrize("rules, where, why", BAD_RULES)
def test_envoy_refuses_bad_rules(make_envoy, rules, where, why):
    envoy = make_envoy(1, plugin_config={"rules": rules}, start=False)   # upstream never used
    envoy.launch()
    rc = envoy.process.wait(timeout=60)
    log = envoy.log_text()
    assert rc == 1, f"envoy exited with {rc}\n{envoy.log_tail()}"
    lines = [ln for ln in log.splitlines() if "[wasm]" in ln and "invalid plugin configuration" in ln]
    assert any(where in ln and why in ln for ln in lines), \
        f"no error naming {where} with {why!r} in Envoy's log:\n{lines}\n{envoy.log_tail()}"
    assert "Unable to create Wasm plugin kafka_filter" in log


def test_validate_mode_refuses_bad_rules(make_envoy):
    rules, where, why = BAD_RULES[0].values
    envoy = make_envoy(1, plugin_config={"rules": rules}, start=False)
    proc = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(envoy.config_path),
                           "--disable-hot-restart", "--log-level", "warn"],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert where in out and why in out, out


def test_good_rules_start(make_envoy):
    envoy = make_envoy(1, plugin_config=RULES)
    assert envoy.poll() is None
    assert "invalid plugin configuration" not in envoy.log_text()


# ------------------------------------------------------------------------------------------
# 6. a client under no rule is untouched, byte for byte


NO_RULE_CLIENT_IDS = {
    "e2e-wire": "another id",
    None: "null client id",
    "checkout-canary-2": "near miss of an exact rule",
    "team-c-app": "another prefix",
    "team-a": "near miss of a prefix rule (prefix `team-a-`)",
}


def test_client_under_no_rule_is_byte_exact(make_envoy):
    """The wire tests' exchange (every kind of frame, cut at awkward places) through an Envoy with
    rules configured, from client ids that match none (one connection each): both directions
    arrive byte-exact and the counters are exactly those of an Envoy without rules (no
    kafka.rewrite.* at all). (A client id under a rule fails this: its Metadata request is
    rewritten.)"""
    import test_e2e_wire as wire
    from harness import RecordingServer, request_frame

    def frames(base: int, client_id: str | None) -> list:
        out = []
        for f in wire.small_frames(base) + wire.big_frames(base + 50):
            # The same frame with this client id in its header (size field recomputed).
            data = f.data
            api_key = int.from_bytes(data[4:6], "big", signed=True)
            version = int.from_bytes(data[6:8], "big", signed=True)
            corr = int.from_bytes(data[8:12], "big", signed=True)
            old_cid_len = int.from_bytes(data[12:14], "big", signed=True)
            rest = data[14 + max(old_cid_len, 0):]
            flexible = api_key == 18 and version == 3   # the only flexible frame the wire tests build
            body = rest[1:] if flexible else rest
            out.append(wire.Frame(request_frame(api_key, version, corr, client_id, body, flexible=flexible),
                                  f.api, f.expects_response, f.unknown_api, f.unknown_version))
        return out

    with RecordingServer(respond=wire.respond) as server:
        envoy = make_envoy(server.port, plugin_config=RULES)
        for i, (client_id, what) in enumerate(NO_RULE_CLIENT_IDS.items()):
            try:
                wire.run_exchange(envoy, server, frames(100 * (i + 1), client_id), [1, 3, 4093, 65537, 7],
                                  pause=0.0002)
            except AssertionError as e:
                raise AssertionError(f"client id {client_id!r} ({what}): {e}") from e
        stats = envoy.kafka_stats()
    assert not {k: v for k, v in stats.items() if k.startswith("kafka.rewrite.") and v}, stats
