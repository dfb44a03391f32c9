"""Rate limits (`limits`), end to end: real Envoy 1.40 + the built filter + a real tansu broker +
real producers (librdkafka through confluent-kafka, and kafka-python).

A producer limited to 1 MiB/s that offers 5 MiB/s (as fast as its 4 MiB send buffer lets it)
for 15 s achieves 0.8-1.2 MiB/s after a 2 s warm-up, measured from the delivery reports until its
send buffer has drained (what was paid for during the warm-up is delivered later, so a window
that ends while the client still owes would count it); it sees no error and loses no message. librdkafka does not back off by itself on throttle_time_ms: what
holds it is the filter pausing the connection, as a broker mutes it (KIP-219). A client under no
limit in the same Envoy, at the same time, keeps the rate it has alone (librdkafka, in both
runs).
"""

from __future__ import annotations

import threading
import time

import pytest

from clients import BrokerView, kafka_python_common, metadata_partitions, rdkafka_common

from load import MIB, OFFER, VALUE, WARMUP, Meter, run_kafka_python, run_rdkafka

LIMIT = 1 * MIB

LIMITS = {
    "limits": [
        {
            "name": "slow-producers",
            "match": {"client_id": {"prefix": "slow-"}},
            "key": "client_id",
            "produce_bytes_per_second": {"rate": LIMIT, "burst": LIMIT},
        }
    ]
}


PRODUCERS = {"rdkafka": run_rdkafka, "kafka-python": run_kafka_python}


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_a_limited_producer_is_held_to_its_rate_without_errors_and_others_are_not(make_stack, client):
    stack = make_stack("filter", LIMITS)
    run = PRODUCERS[client]
    # The unlimited client is librdkafka in both runs: two kafka-python producers in one Python
    # process share its interpreter lock, which would measure Python, not the filter.
    run_free = run_rdkafka
    # Alone: the unlimited client's rate in this run, for comparison.
    alone = Meter()
    w = run_free(stack.bootstrap, "free-alone", "free-alone", alone)
    alone_rate = alone.rate(*w)

    slow, free = Meter(), Meter()
    windows: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []

    def go(name: str, client_id: str, meter: Meter) -> None:
        try:
            producer = run if name == "slow" else run_free
            windows[name] = producer(stack.bootstrap, client_id, client_id, meter)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=("slow", "slow-1", slow)),
               threading.Thread(target=go, args=("free", "free-1", free))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    slow_rate = slow.rate(*slow.span()) / MIB
    free_rate = free.rate(*windows["free"])
    stats = stack.envoy.settled_kafka_stats()
    print(f"{client}: limited {slow_rate:.2f} MiB/s, unlimited {free_rate / MIB:.2f} MiB/s "
          f"(alone {alone_rate / MIB:.2f}), throttled {stats.get('kafka.limit.slow-producers.limit_throttled')}")
    assert not slow.errors and not free.errors, (slow.errors[:3], free.errors[:3])
    # Nothing lost: every message sent was delivered.
    assert len(slow.delivered) == slow.sent and len(free.delivered) == free.sent
    assert 0.8 <= slow_rate <= 1.2, f"limited producer at {slow_rate:.2f} MiB/s"
    # The unlimited client is never held (below: no throttle under its key) and keeps at least half
    # its rate alone: it offers 5 MiB/s, and the two windows are minutes apart on a shared machine.
    assert free_rate >= 0.5 * min(alone_rate, OFFER), (free_rate, alone_rate)
    assert stats.get("kafka.limit.slow-producers.limit_throttled", 0) > 0
    assert stats.get("kafka.connections_closed_by_policy", 0) == 0
    # In Prometheus: per limit, and per key (the client id) under the same limit label.
    prom = stack.envoy.prometheus()
    per_limit = prom.find("kafka_limit_throttled", kafka_limit="slow-producers")
    per_key = prom.find("kafka_limit_key_throttled", kafka_limit="slow-producers", kafka_limit_key="slow-1")
    assert per_limit and per_limit[0][1] == stats["kafka.limit.slow-producers.limit_throttled"], per_limit
    assert per_key and per_key[0][1] == per_limit[0][1], per_key
    assert not prom.find("kafka_limit_key_throttled", kafka_limit_key="free-1")


def test_one_limit_holds_for_the_sum_of_connections_on_every_worker(make_stack):
    """Envoy with two workers, six producers with one client id: their sum is held to the limit
    (buckets in Envoy's shared data, not per worker)."""
    limit = 2 * MIB
    config = {"limits": [{"name": "shared", "match": {"client_id": {"exact": "many"}},
                          "key": "client_id", "produce_bytes_per_second": {"rate": limit, "burst": limit}}]}
    stack = make_stack("filter", config, concurrency=2)
    meters = [Meter() for _ in range(6)]
    windows: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def go(meter: Meter) -> None:
        try:
            windows.append(run_rdkafka(stack.bootstrap, "many", "many", meter))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(m,)) for m in meters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    # Over the whole run, from the first delivery to the last: six connections each hold up to
    # a buffer's worth paid for before any warm-up would end, which a shorter window would count.
    start = min(m.delivered[0][0] for m in meters)
    end = max(m.delivered[-1][0] for m in meters)
    total = sum(m.rate(start, end) for m in meters) / MIB
    stats = stack.envoy.stats().values
    per_worker = {k: v for k, v in stats.items()
                  if k.startswith("listener.") and ".worker_" in k and k.endswith(".downstream_cx_total")}
    print(f"six producers, two workers: {total:.2f} MiB/s together; connections per worker {per_worker}")
    assert all(not m.errors for m in meters), [m.errors[:2] for m in meters]
    assert all(len(m.delivered) == m.sent for m in meters)
    assert sum(1 for v in per_worker.values() if v > 0) == 2, per_worker
    assert 0.8 * limit / MIB <= total <= 1.2 * limit / MIB, f"{total:.2f} MiB/s for a {limit / MIB} MiB/s limit"


def test_a_consumer_limited_in_fetch_bytes_reads_a_backlog_at_its_rate(make_stack):
    from confluent_kafka import Consumer

    limit = 2 * MIB
    config = {"limits": [{"name": "readers", "match": {"client_id": {"exact": "slow-reader"}},
                          "fetch_bytes_per_second": {"rate": limit, "burst": limit}}]}
    stack = make_stack("filter", config)
    # A backlog of 24 MiB, written by a client under no limit.
    backlog = Meter()
    from confluent_kafka import Producer
    p = Producer({**rdkafka_common(stack.bootstrap), "client.id": "writer", "linger.ms": 20})
    for _ in range(24 * MIB // VALUE):
        while True:
            try:
                p.produce("backlog", b"y" * VALUE, on_delivery=lambda e, m: backlog.ok(VALUE) if e is None else backlog.error(e))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0 and not backlog.errors
    c = Consumer({**rdkafka_common(stack.bootstrap), "client.id": "slow-reader", "group.id": "slow",
                  "auto.offset.reset": "earliest", "fetch.max.bytes": MIB, "message.max.bytes": MIB,
                  "max.partition.fetch.bytes": 256 * 1024, "enable.auto.commit": False,
                  # tansu answers the second JoinGroup after half the session timeout (see
                  # test_e2e_traffic.py): the 45 s default would spend ~22 s of the deadline joining.
                  "session.timeout.ms": 6000})
    c.subscribe(["backlog"])
    got: list[tuple[float, int]] = []
    errors: list[str] = []
    deadline = time.monotonic() + 60
    total = 24 * MIB
    received = 0
    while received < total and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        received += len(m.value())
        got.append((time.monotonic(), len(m.value())))
    c.close()
    assert received == total, f"{received} of {total} bytes consumed"
    assert not errors, errors[:3]
    first = got[0][0]
    window = [(t, n) for t, n in got if t >= first + WARMUP]
    rate = sum(n for _, n in window) / (window[-1][0] - (first + WARMUP)) / MIB
    stats = stack.envoy.settled_kafka_stats()
    print(f"fetch-limited consumer: {rate:.2f} MiB/s for a {limit / MIB} MiB/s limit, "
          f"throttled {stats.get('kafka.limit.readers.limit_throttled')}")
    assert stats.get("kafka.limit.readers.limit_throttled", 0) > 0
    assert 0.8 * limit / MIB <= rate <= 1.2 * limit / MIB, f"{rate:.2f} MiB/s"


def test_connections_over_the_limit_are_closed_and_others_still_connect(make_stack):
    from kafka.protocol.metadata import ApiVersionsRequest

    from clients import RawKafka

    config = {"limits": [
        {"name": "conns", "match": {"client_id": {"prefix": "conn-"}}, "key": "client_id",
         "max_connections": 3},
        {"name": "storm", "match": {"client_id": {"exact": "storm"}},
         "connections_per_second": {"rate": 5, "burst": 5}},
    ]}
    stack = make_stack("filter", config)
    port = stack.envoy.listener_port

    def connect(client_id: str) -> RawKafka | None:
        raw = RawKafka(port, client_id=client_id, timeout=5)
        try:
            raw.call(ApiVersionsRequest(), 0)
            return raw
        except (ConnectionError, OSError):
            raw.close()
            return None

    held = [connect("conn-a") for _ in range(3)]
    assert all(held), "the first three connections of one client id are let in"
    assert connect("conn-a") is None, "the fourth concurrent connection is closed"
    other = connect("conn-b")
    assert other is not None, "another identity still connects"
    held[0].close()
    # The closed connection's slot comes back once Envoy has torn it down.
    again = None
    deadline = time.monotonic() + 10
    while again is None and time.monotonic() < deadline:
        again = connect("conn-a")
        time.sleep(0.1)
    assert again is not None
    # A reconnect storm: 30 connections as fast as possible, held to 5 per second (burst 5).
    started = time.monotonic()
    ok = 0
    for _ in range(30):
        r = connect("storm")
        if r is not None:
            ok += 1
            r.close()
    elapsed = time.monotonic() - started
    assert ok <= 5 + 5 * elapsed + 1, (ok, elapsed)
    assert ok >= 5
    stats = stack.envoy.settled_kafka_stats()
    assert stats.get("kafka.limit.conns.limit_connections_refused", 0) >= 1
    assert stats.get("kafka.limit.storm.limit_connections_refused", 0) == 30 - ok
    for r in held[1:] + [other, again]:
        r.close()


def test_dry_run_changes_nothing_and_counts(make_stack):
    config = {"limits": [{"name": "dry", "mode": "dry_run", "match": {"client_id": {"prefix": "slow-"}},
                          "produce_bytes_per_second": {"rate": 256 * 1024, "burst": 256 * 1024}}]}
    stack = make_stack("filter", config)
    meter = Meter()
    start, end = run_rdkafka(stack.bootstrap, "slow-dry", "dry", meter, seconds=6)
    rate = meter.rate(start, end) / MIB
    stats = stack.envoy.settled_kafka_stats()
    print(f"dry run: {rate:.2f} MiB/s past a 0.25 MiB/s dry-run limit, "
          f"would have throttled {stats.get('kafka.limit.dry.limit_would_throttle')}")
    assert not meter.errors and len(meter.delivered) == meter.sent
    assert rate > 1.0, "a dry-run limit does not hold the client"
    assert stats.get("kafka.limit.dry.limit_would_throttle", 0) > 0
    assert stats.get("kafka.limit.dry.limit_throttled", 0) == 0


MUTATIONS = {"limits": [{"name": "admin", "match": {"client_id": {"prefix": "admin-"}},
                         "topic_mutations_per_second": {"rate": 1, "burst": 2}}]}
# kafka-python is refused rather than held, so its creates come as fast as a fresh admin client
# can connect: at 1/s a slow machine could pay as it goes. At 0.1/s, creates after the burst are
# refused unless each took ten seconds.
MUTATIONS_SLOW = {"limits": [{**MUTATIONS["limits"][0], "topic_mutations_per_second": {"rate": 0.1, "burst": 2}}]}


def create_rdkafka(bootstrap: str, names: list[str]) -> dict[str, str | None]:
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({**rdkafka_common(bootstrap), "client.id": "admin-rdkafka"})
    out: dict[str, str | None] = {}
    for n in names:
        f = a.create_topics([NewTopic(n, num_partitions=1, replication_factor=1)], request_timeout=30)[n]
        try:
            f.result(30)
            out[n] = None
        except Exception as e:  # noqa: BLE001 - the error is the result
            out[n] = e.args[0].name() if e.args and hasattr(e.args[0], "name") else str(e)
    return out


def create_kafka_python(bootstrap: str, names: list[str]) -> dict[str, str | None]:
    """A new admin client per topic: kafka-python honours throttle_time_ms itself (it refuses to
    send on a throttled connection, NodeNotReadyError), so each create comes fresh, as several
    administrators' tools would."""
    from kafka.admin import KafkaAdminClient, NewTopic
    out: dict[str, str | None] = {}
    for n in names:
        a = KafkaAdminClient(**kafka_python_common(bootstrap), client_id="admin-kafka-python")
        try:
            a.create_topics([NewTopic(n, 1, 1)])
            out[n] = None
        except Exception as e:  # noqa: BLE001 - the error is the result
            out[n] = type(e).__name__
        finally:
            a.close()
    return out


@pytest.mark.parametrize("client", ["rdkafka", "kafka-python"])
def test_topic_mutations_over_their_rate(make_stack, client):
    """Six topics created in a row under a burst of two and a rate of one partition per second
    (0.1 for kafka-python, see MUTATIONS_SLOW). kafka-python speaks CreateTopics v6+, where a
    broker over the controller mutation quota answers THROTTLING_QUOTA_EXCEEDED (KIP-599): it sees
    that error. librdkafka 2.x speaks an older version, which has no such error: its creates are
    delayed instead, and all succeed."""
    stack = make_stack("filter", MUTATIONS if client == "rdkafka" else MUTATIONS_SLOW)
    create = create_rdkafka if client == "rdkafka" else create_kafka_python
    names = [f"mut-{client}-{i}" for i in range(6)]
    started = time.monotonic()
    results = create(stack.bootstrap, names)
    elapsed = time.monotonic() - started
    stats = stack.envoy.settled_kafka_stats()
    print(f"{client}: {results} in {elapsed:.1f} s; {stats.get('kafka.limit.admin.limit_throttled')} throttled")
    assert stats.get("kafka.limit.admin.limit_throttled", 0) > 0
    with BrokerView(stack.broker.port) as view:
        on_broker = {n for n in names if metadata_partitions(view, n)}
    if client == "rdkafka":
        assert all(r is None for r in results.values()), results
        assert on_broker == set(names)
        # 6 partitions at 1/s with a burst of 2: about 4 s of holding.
        assert elapsed >= 3.0, elapsed
    else:
        refused = {n for n, r in results.items() if r == "ThrottlingQuotaExceededError"}
        assert refused, results
        assert set(results) - refused == {n for n, r in results.items() if r is None}
        # What was refused never reached the broker; what was created is there.
        assert on_broker == set(names) - refused


def test_a_limited_client_under_a_rule_is_rewritten_and_held(make_stack):
    """A tenant under a name-conversion rule and a limit at once: requests that arrive while
    the connection is paused are rewritten in Envoy's buffer behind bytes already seen (the
    filter writes those back unchanged), and every record lands in the tenant's physical topic."""
    config = {
        "rules": [{"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}],
        "limits": [{"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}},
                    "produce_bytes_per_second": {"rate": LIMIT, "burst": LIMIT}}],
    }
    stack = make_stack("filter", config)
    meter = Meter()
    run_rdkafka(stack.bootstrap, "team-a-loader", "events", meter, seconds=8)
    rate = meter.rate(*meter.span()) / MIB
    stats = stack.envoy.settled_kafka_stats()
    print(f"tenant under a rule and a limit: {rate:.2f} MiB/s, {len(meter.delivered)} delivered")
    assert not meter.errors and len(meter.delivered) == meter.sent
    assert 0.8 <= rate <= 1.2, f"{rate:.2f} MiB/s"
    assert stats.get("kafka.limit.team-a.limit_throttled", 0) > 0
    assert stats.get("kafka.rewrite.requests", 0) > 0 and not stats.get("kafka.rewrite.errors")
    with BrokerView(stack.broker.port) as view:
        assert metadata_partitions(view, "team-a.events")
        assert not metadata_partitions(view, "events")


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_a_per_topic_limit_holds_each_topic_of_one_client_on_its_own(make_stack, client):
    """`per_topic`: one client id, two producers. The one writing `hot` as fast as it can is
    held to the limit; the one writing `cool` at half of it is never held, although together
    they are over the limit (a limit on the client's sum would hold both)."""
    config = {"limits": [{"name": "per-topic", "match": {"client_id": {"exact": "topics"}},
                          "key": "client_id", "per_topic": True,
                          "produce_bytes_per_second": {"rate": LIMIT, "burst": LIMIT}}]}
    stack = make_stack("filter", config)
    hot, cool = Meter(), Meter()
    windows: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []

    def go(name: str) -> None:
        try:
            if name == "hot":
                windows[name] = PRODUCERS[client](stack.bootstrap, "topics", "hot", hot)
            else:
                windows[name] = run_rdkafka(stack.bootstrap, "topics", "cool", cool, rate=LIMIT / 2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(n,)) for n in ("hot", "cool")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    hot_rate = hot.rate(*hot.span()) / MIB
    cool_rate = cool.rate(*windows["cool"]) / MIB
    stats = stack.envoy.settled_kafka_stats()
    held = {t: stats.get(f"kafka.limit.per-topic.topic.{t}.limit_topic_throttled", 0) for t in ("hot", "cool")}
    print(f"{client}: hot {hot_rate:.2f} MiB/s, cool {cool_rate:.2f} MiB/s (offered {LIMIT / 2 / MIB}), held {held}")
    assert not hot.errors and not cool.errors, (hot.errors[:3], cool.errors[:3])
    assert len(hot.delivered) == hot.sent and len(cool.delivered) == cool.sent
    assert 0.8 <= hot_rate <= 1.2, f"hot at {hot_rate:.2f} MiB/s"
    assert cool_rate >= 0.8 * LIMIT / 2 / MIB, f"cool at {cool_rate:.2f} MiB/s"
    assert held["hot"] > 0 and held["cool"] == 0, held
    prom = stack.envoy.prometheus()
    series = prom.find("kafka_limit_topic_throttled", kafka_limit="per-topic", kafka_topic="hot")
    assert series and series[0][1] == held["hot"], series
