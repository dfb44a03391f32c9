"""End-to-end traffic through the real filter: real Envoy, real tansu broker, two real clients.

- Data integrity: >= 10,000 messages of mixed sizes (up to exactly 1 MiB) produced and consumed
  byte-exact and in order per partition, with librdkafka and with kafka-python, run the same way
  directly against the broker, through plain tcp_proxy and through the filter (differential: a
  broker quirk shows up on every route, a filter bug only on the filter's).
- Counting: the filter's per-API request/response counters equal what the clients themselves sent
  and received (see tests/clients.py for how each client is counted).
- Prometheus: /stats/prometheus carries the per-API label and the latency histogram.

Wire-level pass-through with hand-built frames is in test_e2e_wire.py, plugin configuration errors
in test_e2e_config.py.

tansu 0.6 findings that shape these tests (checked directly against the broker, no Envoy):
- Consumer groups work with both clients, but tansu answers the JoinGroup that follows
  MEMBER_ID_REQUIRED only after about half the member's session timeout (~22 s with the 45 s
  default). A kafka-python consumer with a short consumer_timeout_ms therefore "receives nothing";
  that is the reported "kafka-python consumer groups do not receive messages". The consumers here
  use session.timeout.ms=6000 (join in ~3 s).
- tansu answers Produce requests sent with acks=0 (a Kafka broker sends no response); clients drop
  those responses, the filter counts them as responses_unmatched.
"""

from __future__ import annotations

import socket

import pytest
from confluent_kafka import Producer
from kafka.record.default_records import DefaultRecordBatchBuilder

from clients import (
    ConsumeChecker,
    KafkaPythonCounter,
    RdkafkaCounter,
    kafka_python_consume,
    kafka_python_create_topic,
    kafka_python_produce,
    message_headers,
    message_key,
    message_plan,
    message_value,
    rdkafka_common,
    rdkafka_consume_group,
    rdkafka_create_topic,
    rdkafka_produce,
    rdkafka_produce_acks0,
)
from harness import delta, kafka_string, per_api, recv_exactly, request_frame, wait_stable, wait_until

MESSAGES = 10_000
LARGE = 36           # of which this many are 64 KiB .. 1 MiB (two exactly 1 MiB)
PARTITIONS = 4

# Counters that must stay zero under well-formed client traffic.
ANOMALIES = (
    "kafka.requests_unknown_api",
    "kafka.requests_unknown_version",
    "kafka.frames_undecodable",
    "kafka.frames_oversized",
    "kafka.frames_invalid_size",
    "kafka.responses_unmatched",
    "kafka.requests_unanswered",
    "kafka.inflight_overflow",
    "kafka.connections_closed_by_policy",
    "kafka.connections_bypassed",
)


def settle_filter_stats(stack, timeout: float = 30.0) -> dict[str, float]:
    """Wait until every connection through the filter is closed and its counters stop moving."""
    envoy = stack.envoy
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, timeout,
               what="all client connections to close (kafka.connections_active == 0)")
    return envoy.settled_kafka_stats(timeout=timeout)


def assert_no_anomalies(stats: dict[str, float]) -> None:
    bad = {k: stats[k] for k in ANOMALIES if stats.get(k)}
    assert not bad, f"the filter counted anomalies in well-formed client traffic: {bad}"


def assert_counts_equal(what: str, filter_counts: dict[str, int], client_counts: dict[str, int]) -> None:
    apis = sorted(set(filter_counts) | set(client_counts))
    rows = [(api, filter_counts.get(api, 0), client_counts.get(api, 0)) for api in apis]
    diff = [r for r in rows if r[1] != r[2]]
    table = "\n".join(f"  {api:28} filter={f:6} client={c:6}{'   <-- differs' if f != c else ''}"
                      for api, f, c in rows)
    assert not diff, f"{what}: the filter's per-API counts differ from the client's:\n{table}"


def assert_responses_bounded(client: str, stats: dict[str, float], sent: dict[str, int],
                             received: dict[str, int], unanswerable: dict[str, int]) -> None:
    """Per API: what the client read <= what the filter matched <= what could be answered.

    A client that closes a connection with a request still in flight (librdkafka does, e.g. a
    GetTelemetrySubscriptions on a connection it is tearing down) may never read a response that
    did pass through the filter, and the broker may never send one; so equality is not a property
    of the filter. With every request answered and read, the bounds meet and force equality.
    """
    f_req = per_api(stats, "requests")
    f_resp = per_api(stats, "responses")
    rows = []
    bad = False
    for api in sorted(set(f_req) | set(f_resp) | set(sent) | set(received)):
        answerable = f_req.get(api, 0) - unanswerable.get(api, 0)
        lo, got, hi = received.get(api, 0), f_resp.get(api, 0), answerable
        ok = lo <= got <= hi
        bad |= not ok
        rows.append(f"  {api:28} client read={lo:6} filter matched={got:6} answerable={hi:6}"
                    f"{'' if ok else '   <-- out of bounds'}")
    assert not bad, f"responses ({client}): the filter's per-API response counts are out of bounds:\n" + "\n".join(rows)
    # Unanswered requests on a closing connection are rare: nearly every response is read.
    total_read, total_matched = sum(received.values()), sum(f_resp.values())
    assert total_matched - total_read <= 5, (total_matched, total_read)


# ------------------------------------------------------------------------------------------
# a. data integrity, differential over routes


@pytest.mark.parametrize("route", ["direct", "tcp_proxy", "filter"])
def test_librdkafka_10k_mixed_sizes_byte_exact(make_stack, route):
    stack = make_stack(route)
    seed = 1001
    plan = message_plan(seed, MESSAGES, LARGE, PARTITIONS)
    assert max(m.size for m in plan) == 1024 * 1024
    topic = "rdkafka-integrity"
    rdkafka_create_topic(stack.bootstrap, topic, PARTITIONS)
    rdkafka_produce(stack.bootstrap, topic, seed, plan)
    checker = ConsumeChecker(seed, plan)
    rdkafka_consume_group(stack.bootstrap, topic, "rdkafka-integrity-group", checker)
    checker.verify()
    if route == "filter":
        stats = settle_filter_stats(stack)
        assert_no_anomalies(stats)
        produced = sum(m.size for m in plan)
        # Every value crossed the filter twice: in Produce requests and in Fetch responses.
        assert stats.get("kafka.request_bytes", 0) > produced
        assert stats.get("kafka.response_bytes", 0) > produced
        assert stats.get("kafka.api.Produce.requests", 0) > 0
        assert stats.get("kafka.api.Fetch.responses", 0) > 0


@pytest.mark.parametrize("route", ["direct", "tcp_proxy", "filter"])
def test_kafka_python_10k_mixed_sizes_byte_exact(make_stack, route):
    stack = make_stack(route)
    seed = 2002
    plan = message_plan(seed, MESSAGES, LARGE, PARTITIONS)
    topic = "kafka-python-integrity"
    kafka_python_create_topic(stack.bootstrap, topic, PARTITIONS)
    kafka_python_produce(stack.bootstrap, topic, seed, plan)
    # kafka-python consumer group (works on tansu 0.6 given a short session timeout, see above).
    checker = ConsumeChecker(seed, plan)
    kafka_python_consume(stack.bootstrap, topic, PARTITIONS, checker, group="kafka-python-integrity-group")
    checker.verify()
    # And the other client reads what this one wrote: the same bytes, whoever decodes them.
    cross = ConsumeChecker(seed, plan)
    rdkafka_consume_group(stack.bootstrap, topic, "cross-client-group", cross)
    cross.verify()
    if route == "filter":
        assert_no_anomalies(settle_filter_stats(stack))


# ------------------------------------------------------------------------------------------
# b. per-API counters equal what the clients sent


def check_acks0_phase(client: str, before: dict[str, float], after: dict[str, float],
                      sent_delta: dict[str, int]) -> None:
    """acks=0 Produce requests are counted as requests, and nothing is matched to them.

    tansu 0.6 answers acks=0 Produce requests (a Kafka broker sends nothing); the clients drop
    those responses, and the filter, which expects none, counts them as responses_unmatched.
    """
    d = delta(after, before)
    assert_counts_equal(f"requests during the acks=0 phase ({client})",
                        per_api(d, "requests"), sent_delta)
    produce = sent_delta.get("Produce", 0)
    assert produce > 0
    assert d.get("kafka.api.Produce.responses", 0) == 0, "a response was matched to an acks=0 Produce"
    assert 0 <= d.get("kafka.responses_unmatched", 0) <= produce, d
    assert_no_anomalies({k: v for k, v in d.items() if k != "kafka.responses_unmatched"})


def test_request_counters_match_librdkafka(make_stack, tmp_path):
    stack = make_stack("filter")
    seed = 3003
    plan = message_plan(seed, 2000, 4, PARTITIONS)
    topic = "rdkafka-counted"

    with RdkafkaCounter(tmp_path / "librdkafka-protocol.log") as counter:
        rdkafka_create_topic(stack.bootstrap, topic, PARTITIONS, extra=counter.conf(stats=False))

        # The producer with statistics: at a quiet point (after flush, statistics unchanged over
        # successive snapshots) its statistics must agree with its protocol log for every broker
        # handle they list (they cannot list the bootstrap handle, see tests/clients.py).
        producer = Producer({**rdkafka_common(stack.bootstrap), "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5, **counter.conf()})
        for pm in plan:
            producer.produce(topic, value=message_value(seed, pm.seq, pm.size), key=message_key(seed, pm.seq),
                             partition=pm.partition, headers=message_headers(seed, pm.seq))
            producer.poll(0)
        assert producer.flush(60) == 0

        def stats_view():
            producer.poll(0.05)
            return counter.stats_requests(), counter.snapshot()

        def two_snapshots() -> bool:
            producer.poll(0.05)  # statistics are delivered by poll(): a fast flush leaves none
            return counter.stats_snapshots >= 2

        wait_until(two_snapshots, 10, what="librdkafka statistics")
        stats_reqs, _ = wait_stable(stats_view, timeout=20, interval=counter.stats_interval_ms / 1000 * 2,
                                    what="librdkafka statistics to settle")
        assert stats_reqs, "librdkafka emitted no broker statistics"
        for (client, broker), reqs in stats_reqs.items():
            assert reqs == counter.log_requests_for(client, broker), (
                f"librdkafka statistics and protocol log disagree for {client} {broker}")
        producer.close()

        checker = ConsumeChecker(seed, plan)
        rdkafka_consume_group(stack.bootstrap, topic, "rdkafka-counted-group", checker, extra=counter.conf())
        checker.verify()

        stats = settle_filter_stats(stack)
        sent, received = counter.snapshot()

        # acks=0: Produce requests without responses. The client closes with tansu's answers
        # unread, which resets the connection and can drop requests still in a socket buffer
        # (see rdkafka_produce_acks0), so the producer stays open until the filter has counted
        # what the client logged as sent; a request the filter never counts fails by timeout.
        def filter_counted_every_produce() -> None:
            def produce_gap() -> int:
                client = delta(counter.snapshot()[0], sent).get("Produce", 0)
                seen = delta(stack.envoy.kafka_stats(), stats).get("kafka.api.Produce.requests", 0)
                return client - seen
            wait_until(lambda: produce_gap() == 0, 20,
                       what="the filter to count every acks=0 Produce the client sent")

        rdkafka_produce_acks0(stack.bootstrap, topic, 25, extra=counter.conf(stats=False),
                              before_close=filter_counted_every_produce)
        after = settle_filter_stats(stack)
        sent2, _ = counter.snapshot()

    assert_counts_equal("requests (librdkafka)", per_api(stats, "requests"), sent)
    assert_responses_bounded("librdkafka", stats, sent, received, {})
    assert_no_anomalies(stats)
    # librdkafka 2.16 sends GetTelemetrySubscriptions (KIP-714) on connect: normal traffic.
    for api in ("ApiVersions", "Metadata", "CreateTopics", "InitProducerId", "Produce", "FindCoordinator",
                "JoinGroup", "SyncGroup", "OffsetFetch", "ListOffsets", "Fetch", "LeaveGroup"):
        assert sent.get(api), f"librdkafka sent no {api}: {sent}"
    check_acks0_phase("librdkafka", stats, after, delta(sent2, sent))


def test_request_counters_match_kafka_python(make_stack):
    stack = make_stack("filter")
    seed = 4004
    plan = message_plan(seed, 1500, 3, PARTITIONS)
    topic = "kafka-python-counted"
    with KafkaPythonCounter() as counter:
        kafka_python_create_topic(stack.bootstrap, topic, PARTITIONS)
        kafka_python_produce(stack.bootstrap, topic, seed, plan)
        checker = ConsumeChecker(seed, plan)
        kafka_python_consume(stack.bootstrap, topic, PARTITIONS, checker, group="kafka-python-counted-group")
        checker.verify()

        stats = settle_filter_stats(stack)
        sent, received = counter.snapshot()
        assert_counts_equal("requests (kafka-python)", per_api(stats, "requests"), sent)
        assert_responses_bounded("kafka-python", stats, sent, received, {})
        assert_no_anomalies(stats)
        for api in ("ApiVersions", "Metadata", "CreateTopics", "Produce", "FindCoordinator", "JoinGroup",
                    "SyncGroup", "OffsetFetch", "ListOffsets", "Fetch", "LeaveGroup"):
            assert sent.get(api), f"kafka-python sent no {api}: {sent}"

        # No acks=0 phase with kafka-python: tansu 0.6 answers acks=0 Produce requests, and
        # kafka-python 3.0 aborts the connection on a response it did not ask for
        # (CorrelationIdError), dropping requests it had already queued. librdkafka ignores such
        # responses; its test covers acks=0.

# ------------------------------------------------------------------------------------------
# e. Prometheus exposition


def latency_histogram_name(prom) -> str:
    names = {n[: -len("_bucket")] for n in prom.names("kafka_response_latency_") if n.endswith("_bucket")}
    assert len(names) == 1, f"expected one kafka_response_latency_* histogram, found {sorted(names)}"
    return names.pop()


def test_prometheus_labels_and_latency_histogram(make_stack):
    stack = make_stack("filter")
    seed = 5005
    plan = message_plan(seed, 300, 1, 2)
    topic = "prometheus"
    rdkafka_create_topic(stack.bootstrap, topic, 2)
    rdkafka_produce(stack.bootstrap, topic, seed, plan)
    checker = ConsumeChecker(seed, plan)
    rdkafka_consume_group(stack.bootstrap, topic, "prometheus-group", checker)
    checker.verify()
    stats = settle_filter_stats(stack)
    requests = per_api(stats, "requests")
    responses = per_api(stats, "responses")
    for api in ("Produce", "Fetch", "Metadata", "ApiVersions", "CreateTopics", "JoinGroup", "SyncGroup",
                "OffsetFetch", "FindCoordinator"):
        assert requests.get(api), f"no {api} requests counted: {requests}"

    # Histograms reach the admin endpoints only when Envoy merges the workers' data (every stats
    # flush interval), so wait until each API's histogram has counted every response.
    def histograms_complete():
        prom = stack.envoy.prometheus()
        name = latency_histogram_name(prom)
        for api, n in responses.items():
            buckets = prom.histogram(name, kafka_api=api)
            if not buckets or buckets[-1][1] != n:
                return None
        return prom

    prom = wait_until(histograms_complete, 30, interval=0.5,
                      what="latency histograms to count every response")
    hist = latency_histogram_name(prom)
    assert prom.types.get("kafka_requests") == "counter"
    assert prom.types.get(hist) == "histogram"
    for api, n in requests.items():
        assert prom.value("kafka_requests", kafka_api=api) == n, api
    for api, n in responses.items():
        assert prom.value("kafka_responses", kafka_api=api) == n, api
        buckets = prom.histogram(hist, kafka_api=api)
        assert buckets[-1][0] == float("inf") and len(buckets) > 5, buckets
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{api}: buckets are not cumulative: {buckets}"
        assert prom.value(hist + "_count", kafka_api=api) == n
    # Every per-API series carries the label: no name still has the API name in it.
    leaked = sorted(n for n in prom.names("kafka_") if any(f"_{api}_" in n or n.endswith(f"_{api}")
                                                         for api in requests))
    assert not leaked, f"per-API metrics without the kafka_api label: {leaked}"
    for name in ("kafka_request_bytes", "kafka_response_bytes", "kafka_connections_total"):
        assert prom.value(name) == stats[name.replace("kafka_", "kafka.", 1)], name
    assert prom.value("kafka_connections_active") == 0


# ------------------------------------------------------------------------------------------
# A broker quirk, shown differentially: tansu answers acks=0 Produce requests.


def _acks0_exchange(bootstrap: str, topic: str) -> list[int]:
    """Raw socket: a Produce v3 acks=0 (correlation id 1, one valid record batch) then a
    Metadata v1 (correlation id 2). Returns the correlation ids of the responses, in order."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    builder.append(0, timestamp=None, key=b"k", value=b"acks=0 record", headers=[])
    batch = bytes(builder.build())
    i16 = lambda v: v.to_bytes(2, "big", signed=True)  # noqa: E731
    i32 = lambda v: v.to_bytes(4, "big", signed=True)  # noqa: E731
    produce = (i16(-1) + i16(0) + i32(30000) + i32(1) + kafka_string(topic)
               + i32(1) + i32(0) + i32(len(batch)) + batch)
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request_frame(0, 3, 1, "acks0-probe", produce) + request_frame(3, 1, 2, "acks0-probe", i32(-1)))
        ids = []
        while 2 not in ids:
            size = int.from_bytes(recv_exactly(s, 4), "big")
            body = recv_exactly(s, size)
            ids.append(int.from_bytes(body[:4], "big", signed=True))
        return ids


@pytest.mark.parametrize("route", ["direct", "filter"])
def test_tansu_answers_acks0_produce(make_stack, route):
    """tansu 0.6 sends a response to a Produce with acks=0 (Kafka sends none). Directly and
    through the filter (only observing) the client sees the same responses; the filter recognises
    the extra one as the acks=0 request's answer (responses_acks0) and counts no response for it."""
    stack = make_stack(route)
    rdkafka_create_topic(stack.bootstrap, "acks0-probe", 1)
    before = settle_filter_stats(stack) if stack.envoy else {}
    assert _acks0_exchange(stack.bootstrap, "acks0-probe") == [1, 2]
    if stack.envoy:
        d = delta(settle_filter_stats(stack), before)
        assert per_api(d, "requests") == {"Produce": 1, "Metadata": 1}, d
        assert per_api(d, "responses") == {"Metadata": 1}, d
        assert d.get("kafka.responses_acks0") == 1, d
        assert not d.get("kafka.responses_unmatched"), d
