"""Per-client metrics (`client_metrics`), end to end: real Envoy 1.40 + the built filter + a real
tansu broker + librdkafka and kafka-python, and a real Prometheus scraping Envoy.

- Each client's per-API request counters, under its own client id, equal what that client itself
  sent (counted from librdkafka's protocol log and at kafka-python's protocol layer), and its
  byte counters are non-zero and add up with the other series to the filter's totals.
- PromQL against the real Prometheus returns the labelled series: client id, principal, API,
  client software name and version, and the per-client latency histogram.
- A client inventing 10,000 client ids leaves the number of client series at the cap plus
  `other`, every request still counted, and Envoy's memory bounded.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading

from confluent_kafka import Producer

import pytest

from clients import (
    BrokerView,
    ConsumeChecker,
    KafkaPythonCounter,
    KafkaPythonOps,
    RdkafkaCounter,
    RdkafkaOps,
    kafka_python_consume,
    kafka_python_create_topic,
    kafka_python_produce,
    message_plan,
    message_value,
    rdkafka_common,
    rdkafka_consume_group,
    rdkafka_create_topic,
    rdkafka_produce,
)
from harness import recv_exactly, request_frame, static_cluster, wait_until
from prometheus import PrometheusServer

MAX_CLIENTS = 20
CONFIG = {"client_metrics": {"max_clients": MAX_CLIENTS}}

_CLIENT_SERIES = re.compile(
    r"^kafka\.client\.(?P<client>[^.]+)\.principal\.(?P<principal>[^.]+)\.api\.(?P<api>[^.]+)\.client_(?P<what>requests|responses)$")


def per_client(stats: dict[str, float], what: str = "requests") -> dict[str, dict[str, int]]:
    """client id -> {api: count} from the filter's /stats names."""
    out: dict[str, dict[str, int]] = {}
    for name, v in stats.items():
        m = _CLIENT_SERIES.match(name)
        if m and m["what"] == what and v:
            out.setdefault(m["client"], {})[m["api"]] = int(v)
    return out


def test_per_client_counters_equal_what_each_client_sent_and_promql_sees_the_labels(make_stack, tmp_path):
    stack = make_stack("filter", CONFIG)
    topic = "client-metrics"
    seed = 7007
    plan = message_plan(seed, 600, 2, 2)
    rdkafka_create_topic(stack.bootstrap, topic, 2, extra={"client.id": "admin-tool"})

    with PrometheusServer(tmp_path, targets=[stack.envoy.admin_port]) as prom:
        prom.wait_for_scrape()
        with RdkafkaCounter(tmp_path / "rdkafka.log") as counter:
            rdkafka_produce(stack.bootstrap, topic, seed, plan,
                            extra={"client.id": "orders-app", **counter.conf(stats=False)})
            rd_sent, _ = counter.snapshot()
        with KafkaPythonCounter() as kp:
            kafka_python_produce(stack.bootstrap, topic, seed + 1, plan, extra={"client_id": "billing-app"})
            kp_sent, _ = kp.snapshot()

        stats = stack.envoy.settled_kafka_stats()
        requests = per_client(stats)
        print("per client:", requests)
        assert requests.get("orders-app") == rd_sent, (requests.get("orders-app"), rd_sent)
        assert requests.get("billing-app") == kp_sent, (requests.get("billing-app"), kp_sent)
        assert requests.get("admin-tool", {}).get("CreateTopics") == 1
        # Every request of every client is in exactly one client series.
        total = {api: int(v) for name, v in stats.items()
                 if (m := re.match(r"^kafka\.api\.([^.]+)\.requests$", name)) for api in [m[1]]}
        summed: dict[str, int] = {}
        for by_api in requests.values():
            for api, n in by_api.items():
                summed[api] = summed.get(api, 0) + n
        assert summed == {a: n for a, n in total.items() if n}, (summed, total)
        for client in ("orders-app", "billing-app"):
            assert stats.get(f"kafka.client.{client}.principal.none.client_request_bytes", 0) > 600 * 2
            assert stats.get(f"kafka.client.{client}.principal.none.client_response_bytes", 0) > 0

        # The same numbers through Prometheus, with labels from the stats tags.
        for client, sent in (("orders-app", rd_sent), ("billing-app", kp_sent)):
            q = f'sum by (kafka_api) (kafka_client_requests{{kafka_client_id="{client}", kafka_principal="none"}})'
            got = prom.wait_for(q, lambda r, sent=sent: {lb["kafka_api"]: int(v) for lb, v in r} == sent)
            print(client, {lb["kafka_api"]: int(v) for lb, v in got})
        # Histograms reach the admin endpoint when Envoy merges its workers' (every 5 s).
        produces = {"orders-app": rd_sent["Produce"], "billing-app": kp_sent["Produce"]}
        prom.wait_for('sum by (kafka_client_id) (kafka_client_response_latency_us_count{kafka_api="Produce"})',
                      lambda r: {lb.get("kafka_client_id"): int(v) for lb, v in r} == produces)
        latency = prom.query('histogram_quantile(0.99, sum by (le, kafka_client_id) '
                             '(kafka_client_response_latency_us_bucket{kafka_api="Produce"}))')
        print("p99 Produce latency (us):", latency)
        assert len(latency) == 2 and all(0 < v < 30e6 for _, v in latency), latency

        # Client software, while a client is connected: librdkafka names itself (KIP-511).
        live = Producer({**rdkafka_common(stack.bootstrap), "client.id": "live-app"})
        try:
            live.list_topics(timeout=10)
            series = prom.wait_for('kafka_client_connections{kafka_client_id="live-app"} > 0',
                                   lambda r: bool(r) and all(lb.get("kafka_client_software") not in
                                                             (None, "unknown") for lb, _ in r))
            print("live-app software:", [(lb["kafka_client_software"], lb["kafka_client_software_version"])
                                         for lb, _ in series])
            for lb, _ in series:
                assert "rdkafka" in lb["kafka_client_software_version"] or "kafka" in lb["kafka_client_software"], lb
            # The README's query for "which client ids run librdkafka N.x", for the 2.x of the tests.
            found = prom.query('count by (kafka_client_id) (kafka_client_connections'
                               '{kafka_client_software_version=~".*rdkafka-2\\\\..*"} > 0)')
            assert [lb["kafka_client_id"] for lb, _ in found] == ["live-app"], found
        finally:
            live.flush(5)
            del live
        # Closed: the gauge returns to zero.
        prom.wait_for('sum(kafka_client_connections{kafka_client_id="live-app"})',
                      lambda r: bool(r) and r[0][1] == 0)
        # kafka-python names itself too (ApiVersions v3+ when the broker offers it).
        kp_soft = prom.query('kafka_client_connections{kafka_client_id="billing-app"}')
        print("billing-app software:", [lb for lb, _ in kp_soft])
        assert kp_soft, "no connection series for billing-app"


_TOPIC_SERIES = re.compile(
    r"^kafka\.client\.(?P<client>[^.]+)\.principal\.[^.]+\.topic\.(?P<topic>.+)\.client_topic_(?P<what>[a-z_]+)$")


def per_client_topic(stats: dict[str, float]) -> dict[tuple[str, str], dict[str, int]]:
    """(client id, topic) -> {produced_bytes, produced_records, fetched_bytes, fetched_records}."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for name, v in stats.items():
        m = _TOPIC_SERIES.match(name)
        if m:
            out.setdefault((m["client"], m["topic"]), {})[m["what"]] = int(v)
    return out


def test_per_topic_records_equal_what_each_client_produced_and_consumed(make_stack, tmp_path):
    """librdkafka produces to `orders.v1` and a librdkafka group consumes it; kafka-python does the
    same with `billing`. Records are counted from batch headers in the Produce requests and Fetch
    responses passing the filter, never from the records themselves."""
    stack = make_stack("filter", CONFIG)
    plans = {"orders.v1": (8101, message_plan(8101, 500, 3, 2)), "billing": (8102, message_plan(8102, 400, 2, 2))}
    rdkafka_create_topic(stack.bootstrap, "orders.v1", 2)
    kafka_python_create_topic(stack.bootstrap, "billing", 2)

    seed, plan = plans["orders.v1"]
    rdkafka_produce(stack.bootstrap, "orders.v1", seed, plan, extra={"client.id": "orders-app"})
    checker = ConsumeChecker(seed, plan)
    rdkafka_consume_group(stack.bootstrap, "orders.v1", "orders-group", checker,
                          extra={"client.id": "orders-reader"})
    checker.verify()

    seed, plan = plans["billing"]
    kafka_python_produce(stack.bootstrap, "billing", seed, plan, extra={"client_id": "billing-app"})
    checker = ConsumeChecker(seed, plan)
    kafka_python_consume(stack.bootstrap, "billing", 2, checker, group="billing-group",
                         extra={"client_id": "billing-reader"})
    checker.verify()

    stats = stack.envoy.settled_kafka_stats()
    topics = per_client_topic(stats)
    print("per client and topic:", topics)
    for producer, reader, topic in (("orders-app", "orders-reader", "orders.v1"),
                                    ("billing-app", "billing-reader", "billing")):
        seed, plan = plans[topic]
        values = sum(len(message_value(seed, pm.seq, pm.size)) for pm in plan)
        produced = topics[(producer, topic)]
        assert produced["produced_records"] == len(plan), (producer, produced)
        # The record sets carry the values, plus keys, headers and batch overhead.
        assert values < produced["produced_bytes"] < values * 2 + 100_000, (producer, produced, values)
        fetched = topics[(reader, topic)]
        # Every record the consumer was handed passed in a Fetch response; a batch fetched again
        # (never here: the partitions are read once from the start) would count twice.
        assert fetched["fetched_records"] == len(plan), (reader, fetched)
        assert fetched["fetched_bytes"] >= produced["produced_bytes"] - 200 * 4, (fetched, produced)
        group = "orders-group" if topic == "orders.v1" else "billing-group"
        members = f"kafka.client.{reader}.principal.none.group.{group}.client_group_members"
        assert members in stats and stats[members] == 0, (members, "closed: no member left")
        # Nobody else produced to or fetched from it.
        others = {k: v for k, v in topics.items() if k[1] == topic and k[0] not in (producer, reader)}
        assert not others, others

    with PrometheusServer(tmp_path, targets=[stack.envoy.admin_port]) as prom:
        prom.wait_for_scrape()
        got = prom.wait_for('sum by (kafka_client_id, kafka_topic) (kafka_client_topic_produced_records)',
                            lambda r: {(lb["kafka_client_id"], lb["kafka_topic"]): int(v) for lb, v in r}
                            == {("orders-app", "orders.v1"): 500, ("billing-app", "billing"): 400})
        print("PromQL produced records:", got)
        prom.wait_for('sum by (kafka_client_id) (kafka_client_topic_fetched_records{kafka_topic="orders.v1"})',
                      lambda r: [(lb["kafka_client_id"], int(v)) for lb, v in r] == [("orders-reader", 500)])
        # Group members (client ids per group), and fetched bytes per group through them.
        fetched = {("orders-group"): topics[("orders-reader", "orders.v1")]["fetched_bytes"],
                   ("billing-group"): topics[("billing-reader", "billing")]["fetched_bytes"]}
        per_group = prom.wait_for(
            'sum by (kafka_group) (sum by (kafka_client_id) (kafka_client_topic_fetched_bytes)'
            ' * on (kafka_client_id) group_left(kafka_group)'
            ' count by (kafka_client_id, kafka_group) (kafka_client_group_members))',
            lambda r: {lb["kafka_group"]: int(v) for lb, v in r} == fetched)
        print("PromQL fetched bytes per group:", per_group)


def api_versions_v0(correlation_id: int, client_id: str) -> bytes:
    return request_frame(18, 0, correlation_id, client_id, b"")


def test_a_client_inventing_ids_leaves_the_series_at_the_cap(make_stack):
    stack = make_stack("filter", CONFIG)
    before = stack.envoy.stats().get("server.memory_allocated")
    ids = 10_000
    errors: list[BaseException] = []

    def worker(start: int) -> None:
        try:
            for i in range(start, ids, 8):
                with socket.create_connection(("127.0.0.1", stack.envoy.listener_port), timeout=10) as s:
                    s.sendall(api_versions_v0(i, f"invented-{i}"))
                    size = struct.unpack(">i", recv_exactly(s, 4))[0]
                    recv_exactly(s, size)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    stats = stack.envoy.settled_kafka_stats()
    clients = per_client(stats)
    assert len(clients) == MAX_CLIENTS + 1, sorted(clients)
    assert "other" in clients
    assert sum(c.get("ApiVersions", 0) for c in clients.values()) == ids
    assert clients["other"]["ApiVersions"] == ids - MAX_CLIENTS
    after = stack.envoy.stats().get("server.memory_allocated")
    print(f"memory allocated: {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after {ids} client ids")
    # Bounded: series for 20 clients, not 10,000 (each would cost Envoy several KiB).
    assert after - before < 16 * 2**20, (before, after)


LAG_CONFIG = {"consumer_lag": {"max_series": 100}, "client_metrics": {}}


def lag_gauges(stats: dict[str, float], group: str, topic: str) -> dict[int, int]:
    prefix = f"kafka.group.{group}.topic.{topic}.partition."
    return {int(name[len(prefix):].split(".")[0]): int(v) for name, v in stats.items()
            if name.startswith(prefix) and name.endswith(".group_lag")}


@pytest.mark.parametrize("ops", [RdkafkaOps, KafkaPythonOps], ids=lambda o: o.name)
def test_committed_lag_agrees_with_the_broker_and_reads_zero_once_caught_up(make_stack, tmp_path, ops):
    """Produce 300, consume and commit 200 with a group: the filter's lag per partition (log end
    from the Fetch responses it saw, minus the commits the broker accepted) equals the broker's own
    answer (high watermark and OffsetFetch, asked directly); after the rest, 0."""
    stack = make_stack("filter", LAG_CONFIG)
    topic, group = f"lagged-{ops.name}", f"lag-group-{ops.name}"
    rdkafka_create_topic(stack.bootstrap, topic, 2)
    seed = 9009
    plan = message_plan(seed, 300, 1, 2)
    rdkafka_produce(stack.bootstrap, topic, seed, plan)
    reader = ops(stack.bootstrap, "lag-reader")
    got, _ = reader.consume(topic, group, 200)
    assert len(got) == 200

    def broker_lag() -> dict[int, int]:
        with BrokerView(stack.broker.port) as view:
            ends = view.end_offsets(topic, 2)
            committed = view.committed(group, topic, 2)
        return {p: ends[p] - c for p, c in committed.items() if c >= 0}

    expected = broker_lag()
    print(f"{ops.name}: broker's lag {expected}")
    assert expected and all(v >= 0 for v in expected.values()), expected
    wait_until(lambda: lag_gauges(stack.envoy.kafka_stats(), group, topic) == expected, 20,
               what=f"the filter's lag to read {expected}")

    with PrometheusServer(tmp_path, targets=[stack.envoy.admin_port]) as prom:
        prom.wait_for_scrape()
        # The aggregate per group and topic, as a dashboard reads it.
        prom.wait_for(f'sum by (kafka_group, kafka_topic) (kafka_group_lag{{kafka_group="{group}"}})',
                      lambda r: [(lb["kafka_topic"], int(v)) for lb, v in r] == [(topic, sum(expected.values()))])
        per_partition = prom.query(f'kafka_group_lag{{kafka_group="{group}"}}')
        assert {int(lb["kafka_partition"]): int(v) for lb, v in per_partition} == expected

    reader.consume(topic, group, 100)
    assert set(broker_lag().values()) == {0}
    wait_until(lambda: set(lag_gauges(stack.envoy.kafka_stats(), group, topic).values()) == {0}
               and len(lag_gauges(stack.envoy.kafka_stats(), group, topic)) == 2, 20,
               what="the filter's lag to read 0 on both partitions")

    # Fetch-position lag per client: the reader has fetched everything, on both partitions.
    def fetch_lags() -> dict[int, int]:
        prefix = f"kafka.client.lag-reader.principal.none.topic.{topic}.partition."
        return {int(n[len(prefix):].split(".")[0]): int(v) for n, v in stack.envoy.kafka_stats().items()
                if n.startswith(prefix) and n.endswith(".client_fetch_lag")}

    wait_until(lambda: fetch_lags() == {0: 0, 1: 0}, 20,
               what=f"the reader's fetch lag to read 0 on both partitions (now {fetch_lags()})")
    prom_text = stack.envoy.prometheus()
    series = prom_text.find("kafka_client_fetch_lag", kafka_client_id="lag-reader", kafka_topic=topic)
    assert sorted(lb["kafka_partition"] for lb, _ in series) == ["0", "1"], series
    # Responses by top-level error code: the broker (KIP-394) answers a new member's first
    # JoinGroup with MEMBER_ID_REQUIRED, and both clients join again with the id it gave.
    joins = prom_text.find("kafka_client_response_errors", kafka_client_id="lag-reader",
                           kafka_api="JoinGroup", kafka_error="MemberIdRequired")
    assert joins and joins[0][1] >= 1, joins


def test_request_log_lines_in_envoys_log(make_stack):
    """One JSON line per matching request in Envoy's log: the logged client's Produce requests,
    complete and parseable; nothing of the client the filter does not match."""
    config = {"client_metrics": {}, "request_log": {"match": {"client_id": {"prefix": "logged-"}},
                                                     "apis": ["Produce", "Fetch"]}}
    # The filter logs through Envoy's wasm component, at info.
    stack = make_stack("filter", config, component_log_level="wasm:info")
    rdkafka_create_topic(stack.bootstrap, "logged", 1)
    plan = message_plan(5151, 200, 0, 1)
    rdkafka_produce(stack.bootstrap, "logged", 5151, plan, extra={"client.id": "logged-app"})
    kafka_python_produce(stack.bootstrap, "logged", 5152, plan, extra={"client_id": "quiet-app"})
    stats = stack.envoy.settled_kafka_stats()
    produce_requests = per_client(stats).get("logged-app", {}).get("Produce", 0)
    assert produce_requests > 0

    def lines() -> list[dict]:
        marker = "kafka_request_log "
        return [json.loads(ln.split(marker, 1)[1]) for ln in stack.envoy.log_text().splitlines() if marker in ln]

    wait_until(lambda: len(lines()) >= produce_requests, 10, what="the request log lines")
    got = lines()
    print(f"{len(got)} request log lines, e.g. {got[0]}")
    assert len(got) == produce_requests
    for line in got:
        assert line["client_id"] == "logged-app" and line["api"] == "Produce", line
        assert line["client_software"].startswith("confluent-kafka-python/"), line
        assert line["produced"] and line["produced"][0]["topic"] == "logged", line
        assert line["latency_us"] is not None and line["request_bytes"] > 0, line
        assert line["time_ms"] > 1_700_000_000_000, line
        assert line["source"] == "127.0.0.1" and line["principal"] is None, line
    assert sum(t["records"] for line in got for t in line["produced"]) == len(plan)
    assert stats.get("kafka.request_log_lines") == produce_requests


class Collector:
    """A real HTTP server that keeps every POST it gets (path, content type, body lines)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        posts = self.posts = []  # type: list[tuple[str, str, list[dict]]]
        lock = self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                lines = [json.loads(ln) for ln in body.decode().splitlines() if ln]
                with lock:
                    posts.append((self.path, self.headers.get("content-type", ""), lines))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def lines(self) -> list[dict]:
        with self.lock:
            return [ln for _, _, lines in self.posts for ln in lines]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


def test_request_log_lines_reach_an_http_collector_and_drops_are_counted(make_stack):
    """The request log's HTTP sink: batched POSTs of JSON lines through an Envoy cluster to a
    real HTTP server; with the server down, clients see nothing of it and the lines are
    counted as dropped; every line is either delivered or counted as dropped."""
    collector = Collector()
    cluster = static_cluster("request_log_collector", collector.port, connect_timeout="0.5s")
    config = {"request_log": {"match": {"client_id": {"prefix": "logged-"}}, "apis": ["Produce"],
                              "envoy_log": False,
                              "http": {"cluster": "request_log_collector", "path": "/kafka/lines",
                                       "flush_ms": 200, "batch_lines": 2}}}
    try:
        stack = make_stack("filter", config, component_log_level="wasm:info",
                           extra_clusters=[cluster])
        rdkafka_create_topic(stack.bootstrap, "collected", 1)
        plan = message_plan(6161, 200, 0, 1)
        rdkafka_produce(stack.bootstrap, "collected", 6161, plan, extra={"client.id": "logged-rdkafka"})
        kafka_python_produce(stack.bootstrap, "collected", 6162, plan, extra={"client_id": "logged-python"})
        stats = stack.envoy.settled_kafka_stats()
        written = stats.get("kafka.request_log_lines", 0)
        assert written > 0
        wait_until(lambda: len(collector.lines()) >= written, 15, what="the lines at the collector")
        got = collector.lines()
        print(f"{len(got)} lines in {len(collector.posts)} POSTs, e.g. {got[0]}")
        assert len(got) == written
        assert {p for p, _, _ in collector.posts} == {"/kafka/lines"}
        assert {t for _, t, _ in collector.posts} == {"application/x-ndjson"}
        assert all(len(lines) <= 2 for _, _, lines in collector.posts)
        assert {ln["client_id"] for ln in got} == {"logged-rdkafka", "logged-python"}
        assert all(ln["api"] == "Produce" and ln["produced"][0]["topic"] == "collected" for ln in got)
        assert sum(t["records"] for ln in got for t in ln["produced"]) == 2 * len(plan)
        assert "kafka_request_log " not in stack.envoy.log_text(), "envoy_log is off"
        # The collector records a POST before it answers, and a batch counts as delivered only
        # once the filter has that answer.
        wait_until(lambda: stack.envoy.kafka_stats().get("kafka.request_log_delivered") == written, 15,
                   what="every line counted as delivered")

        # The collector goes away: traffic is unaffected, the lines are counted as dropped.
        collector.stop()
        rdkafka_produce(stack.bootstrap, "collected", 6163, plan, extra={"client.id": "logged-rdkafka"})
        kafka_python_produce(stack.bootstrap, "collected", 6164, plan, extra={"client_id": "logged-python"})
        with BrokerView(stack.broker.port) as view:
            assert view.end_offsets("collected", 1)[0] == 4 * len(plan)

        def accounted() -> bool:
            s = stack.envoy.kafka_stats()
            return (s.get("kafka.request_log_lines", 0) > written
                    and s.get("kafka.request_log_lines", 0)
                    == s.get("kafka.request_log_delivered", 0) + s.get("kafka.request_log_dropped", 0))

        wait_until(accounted, 20, what="every line delivered or counted as dropped")
        s = stack.envoy.kafka_stats()
        print(f"collector down: {s.get('kafka.request_log_dropped')} lines dropped, "
              f"{s.get('kafka.request_log_batches_failed')} batches failed")
        assert s.get("kafka.request_log_delivered") == written
        assert s.get("kafka.request_log_dropped", 0) > 0 and s.get("kafka.request_log_batches_failed", 0) > 0
        assert s.get("kafka.connections_closed_by_policy", 0) == 0
    finally:
        collector.stop()
