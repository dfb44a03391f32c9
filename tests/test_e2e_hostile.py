"""A hostile client against the filter's bookkeeping (issue 25), end to end: real Envoy 1.40 +
the built filter + a real tansu broker, raw Kafka requests over sockets (and real clients where a
real client is the point).

Each check is made where an attacker cannot fake it: on the client side (the bytes the socket
received, whether the connection was closed) or on the broker side (read directly from tansu,
never through Envoy). With stages configured (here ACLs, a name-conversion rule or a rate limit):

1. A correlation id reused while a request with it still waits (after an acks=0 Produce, which
   tansu answers) would let the broker's answers be paired with the wrong requests, so that an
   unfiltered all-topics Metadata or ListGroups answer reached the client as the answer to a
   DescribeCluster: the duplicate closes the connection and nothing of another team reaches it.
2. More waiting requests than `max_inflight_requests`: the connection closes before the one over
   the bound (or anything after it) is forwarded.
3. acks=0 Produce with real clients (librdkafka, kafka-python) under a rule: tansu's answers to
   them are dropped by the filter (the client gets what Kafka sends: nothing), every message lands,
   compared with the same producer directly against a broker. Raw: more acks=0 requests in flight
   than the filter keeps one by one, around a request that waits (what librdkafka does), and
   acks=0 requests with non-consecutive ids (what the Java client's ids look like per connection).
4. Reconnecting for every request escapes no rate limit: bytes and requests per second, measured
   on the broker (bytes) and on the client (answers), against a control run without the limit.
5. Log lines a client can cause are bounded: one connection flooding its table, and thousands
   of connections each breaking a rule, write a handful of lines and a bounded number per second;
   the rest are counted in `kafka.log_lines_suppressed`.

And no false alarm: an id is free again once its acks=0 Produce was answered (the answer dropped);
without stages (observe only) a duplicate is forwarded and counted, not punished.
"""

from __future__ import annotations

import logging
import selectors
import socket
import sys
import time

import pytest

from clients import BrokerView, rdkafka_common, wait_broker
from conftest import Stack, _start_proxied_stack, need_wasm
from harness import Broker, Envoy, delta, recv_exactly, wait_until
from test_e2e_wire import Reader, close, connect

TEAM_A = "team-a-app"
TEAM_B = "team-b-app"
SECRET_TOPIC = "b-secret"
SECRET_GROUP = "b-grp"


def _team(prefix: str, client_prefix: str) -> list[dict]:
    who = {"client_id": {"prefix": client_prefix}}
    return [
        {"match": who, "permission": "allow", "operations": ["Read", "Write"],
         "resource_type": "topic", "pattern_type": "prefixed", "name": prefix},
        {"match": who, "permission": "allow", "operations": ["Read"],
         "resource_type": "group", "pattern_type": "prefixed", "name": prefix},
    ]


def acls_config(**extra) -> dict:
    """One client id prefix per team, each owning the topics and groups of its own prefix; the
    rest denied."""
    return {"acls": {"default": "deny", "entries": _team("a-", "team-a") + _team("b-", "team-b")}, **extra}


# ------------------------------------------------------------------------------------------
# Raw requests (kafka-python's protocol encoders; any correlation id, any client id)


def enc(req, version: int, corr: int, client_id: str | None = TEAM_A) -> bytes:
    req.with_header(correlation_id=corr, client_id=client_id)
    return bytes(req.encode(version=version, header=True, framed=True))


def record_batch(value: bytes) -> bytes:
    from kafka.record.memory_records import MemoryRecordsBuilder
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=len(value) + (1 << 16))
    builder.append(timestamp=None, key=None, value=value, headers=[])
    builder.close()
    return bytes(builder.buffer())


def produce(topic: str, value: bytes, acks: int, corr: int, client_id: str = TEAM_A, version: int = 3) -> bytes:
    from kafka.protocol.producer import ProduceRequest
    T = ProduceRequest.TopicProduceData
    req = ProduceRequest(transactional_id=None, acks=acks, timeout_ms=5000, topic_data=[
        T(name=topic, partition_data=[T.PartitionProduceData(index=0, records=record_batch(value))])])
    return enc(req, version, corr, client_id)


def metadata_all(corr: int, client_id: str = TEAM_A) -> bytes:
    """Metadata v4 with a null topic array: every topic."""
    from kafka.protocol.metadata import MetadataRequest
    return enc(MetadataRequest(topics=None, allow_auto_topic_creation=False), 4, corr, client_id)


def metadata_one(topic: str, corr: int, client_id: str) -> bytes:
    from kafka.protocol.metadata import MetadataRequest
    req = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                          allow_auto_topic_creation=False)
    return enc(req, 4, corr, client_id)


def describe_cluster(corr: int, client_id: str = TEAM_A) -> bytes:
    from kafka.protocol.admin import DescribeClusterRequest
    return enc(DescribeClusterRequest(include_cluster_authorized_operations=False), 0, corr, client_id)


def list_groups(corr: int, client_id: str = TEAM_A) -> bytes:
    from kafka.protocol.admin import ListGroupsRequest
    return enc(ListGroupsRequest(), 1, corr, client_id)


def api_versions_v0(corr: int, client_id: str = TEAM_A) -> bytes:
    from kafka.protocol.metadata import ApiVersionsRequest
    return enc(ApiVersionsRequest(), 0, corr, client_id)


def long_poll_fetch(topic: str, corr: int, client_id: str = TEAM_A) -> bytes:
    """Fetch v4 of partition 0 that the broker holds for max_wait_ms (min_bytes never reached)."""
    from kafka.protocol.consumer import FetchRequest
    T = FetchRequest.FetchTopic
    req = FetchRequest(replica_id=-1, max_wait_ms=10000, min_bytes=64 << 20, max_bytes=1 << 20,
                       isolation_level=0, topics=[T(topic=topic, partitions=[
                           T.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])])
    return enc(req, 4, corr, client_id)


def commit_offset_on_broker(view: BrokerView, group: str, topic: str) -> None:
    """A standalone offset commit (OffsetCommit v2, no member): the broker then knows the group."""
    from kafka.protocol.consumer import OffsetCommitRequest
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    req = OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=-1, member_id="",
                              retention_time_ms=-1, topics=[T(name=topic, partitions=[
                                  T.OffsetCommitRequestPartition(partition_index=0, committed_offset=0,
                                                                 committed_metadata="")])])
    resp = view.call(req, 2)
    errors = [p.error_code for t in resp.topics for p in t.partitions]
    assert errors == [0], resp


# ------------------------------------------------------------------------------------------
# Helpers


def connection_outcome(envoy, data: list[bytes], timeout: float = 15.0,
                       pause: float = 0.0) -> tuple[bytes, bool]:
    """Open a connection to Envoy, write `data` (each item one sendall, `pause` seconds apart),
    and read until the connection is closed or `timeout` passes: (what the client received, closed)."""
    sock = connect(envoy)
    reader = Reader(sock)
    try:
        for i, chunk in enumerate(data):
            if i and pause:
                time.sleep(pause)
            try:
                sock.sendall(chunk)
            except OSError:
                break   # closed by the other end while writing
        try:
            return reader.wait_closed(timeout), True
        except TimeoutError:
            return reader.read_at_least(0, timeout=0), False
    finally:
        close(sock)


def call_one(envoy, frame: bytes) -> bytes:
    """Send one request on a new connection; its response frame (without the size)."""
    sock = connect(envoy)
    try:
        sock.sendall(frame)
        size = int.from_bytes(recv_exactly(sock, 4), "big")
        return recv_exactly(sock, size)
    finally:
        close(sock)


def settled(envoy) -> dict[str, float]:
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="every connection to close")
    return envoy.settled_kafka_stats()


def high_watermark(broker_port: int, topic: str) -> int:
    with BrokerView(broker_port) as view:
        return view.end_offsets(topic, 1)[0]


def seed(stack, topics: list[str], groups: dict[str, str] | None = None) -> None:
    """Create topics (those not there yet) and groups directly on the broker."""
    with BrokerView(stack.broker.port) as view:
        have = view.topics()
        for t in topics:
            if t not in have:
                view.create_topic(t, 1)
        for g, t in (groups or {}).items():
            commit_offset_on_broker(view, g, t)
        if groups:
            wait_broker(lambda: set(groups) <= view.groups(), what=f"groups {sorted(groups)} on the broker")


class Stacks:
    """Brokers and Envoys shared by the tests of this module (an Envoy takes seconds to load the
    filter), one per configuration; every test uses its own topics, markers and connections, and
    reads counters as deltas."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.made: dict[str, Stack] = {}
        self.used: list[Stack] = []

    def get(self, name: str, plugin_config: dict | None = None, concurrency: int = 1) -> Stack:
        if name not in self.made:
            workdir = self.tmp.mktemp(name)
            if plugin_config is None:
                broker = Broker(workdir=workdir)
                self.made[name] = Stack("direct", broker)
                broker.start()
            else:
                need_wasm()
                holder: list[Stack] = []
                _start_proxied_stack(holder, "filter", workdir, lambda broker_port, **ports: Envoy(
                    broker_port, plugin_config=plugin_config, workdir=workdir, concurrency=concurrency,
                    **ports))
                self.made[name] = holder[0]
        stack = self.made[name]
        self.used.append(stack)
        return stack

    def stop(self) -> None:
        for s in self.made.values():
            s.stop()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    shared = Stacks(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, stacks):
    stacks.used = []
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for s in stacks.used:
            print(s.logs(), file=sys.stderr)


def acl_stack(stacks: Stacks) -> Stack:
    """ACLs as above (max_inflight_requests 20), with a-1, b-secret and team-b's group b-grp."""
    fresh = "acl" not in stacks.made
    stack = stacks.get("acl", acls_config(max_inflight_requests=20))
    if fresh:
        seed(stack, ["a-1", SECRET_TOPIC], {SECRET_GROUP: SECRET_TOPIC})
    return stack


def values(stack: Stack, topic: str) -> list[bytes]:
    with BrokerView(stack.broker.port) as view:
        return view.values(topic)


# ------------------------------------------------------------------------------------------
# 1. duplicate correlation ids


CORR = 4242

ATTACKS = {
    # The broker's answers to the acks=0 Produce, to the all-topics Metadata and to the
    # DescribeCluster all carry CORR: paired by id, the Metadata answer could pass as the
    # DescribeCluster's, which no ACL filters.
    "metadata": (metadata_all, SECRET_TOPIC.encode()),
    "listgroups": (list_groups, SECRET_GROUP.encode()),
}


@pytest.mark.parametrize("writes", ["one-write", "separate-writes"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_reused_correlation_id_closes_the_connection_and_leaks_nothing(stacks, attack, writes):
    """one-write: Produce acks=0 (id X), the listing (id X), DescribeCluster (id X) and a marker
    Produce (acks=1) in one write. separate-writes: the same, one write each, 50 ms apart (so
    Envoy reads them one by one), behind a long-polling Fetch: the broker answers a connection's
    requests in order, so nothing is answered while they come and the acks=0 Produce's id
    is still waiting when the listing reuses it."""
    stack = acl_stack(stacks)
    listing, secret = ATTACKS[attack]
    # Control: the secret is on the broker, and an honest request of team-a does not show it.
    with BrokerView(stack.broker.port) as view:
        assert SECRET_TOPIC in view.topics() and SECRET_GROUP in view.groups()
    honest = call_one(stack.envoy, listing(1))
    assert len(honest) > 8 and secret not in honest, honest[:200]
    # ... while its owner sees it through Envoy (so the checks below can fail).
    assert secret in call_one(stack.envoy, listing(1, TEAM_B))
    before = settled(stack.envoy)

    marker = f"after-{attack}-{writes}".encode()
    frames = [produce("a-1", b"acks0-" + marker, 0, CORR), listing(CORR), describe_cluster(CORR),
              produce("a-1", marker, 1, CORR + 1)]
    started = time.monotonic()
    if writes == "one-write":
        got, closed = connection_outcome(stack.envoy, [b"".join(frames)], timeout=10)
    else:
        got, closed = connection_outcome(stack.envoy, [long_poll_fetch("a-1", 1)] + frames, timeout=12,
                                         pause=0.05)
    took = time.monotonic() - started
    assert secret not in got, f"{secret!r} reached team-a's client: {got[:400]!r}"
    assert closed, f"the connection stayed open; the client got {len(got)} bytes: {got[:200]!r}"
    assert took < 5, f"closed after {took:.1f}s (when the long poll ended?)"
    # Nothing was answered: the broker's answer to the acks=0 Produce is not for the client.
    assert got == b"", got[:200]
    d = delta(settled(stack.envoy), before)
    print(f"{attack}/{writes}: closed after {took:.2f}s, client got {len(got)} bytes; counters {sorted(d.items())}")
    assert d.get("kafka.requests_duplicate_correlation") == 1, d
    assert d.get("kafka.connections_closed_by_policy") == 1, d
    # Nothing after the duplicate reached the broker.
    assert marker not in values(stack, "a-1")


def read_frames(sock: socket.socket, n: int, timeout: float = 10.0) -> list[bytes]:
    out = []
    for _ in range(n):
        size = int.from_bytes(recv_exactly(sock, 4, timeout), "big")
        out.append(recv_exactly(sock, size, timeout))
    return out


def nothing_more(sock: socket.socket, wait: float = 0.5) -> bytes:
    """What arrives within `wait` seconds (b"" if nothing; the connection must stay open)."""
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return b""
    if not data:
        raise ConnectionError("the connection was closed")
    return data


def test_an_acks0_answer_never_reaches_the_client_and_its_id_is_free_after(stacks):
    """No false alarm, and what Kafka would send: an acks=0 Produce (id 5) and a Metadata (id 6)
    in one write get exactly one answer, id 6 (tansu's answer to the Produce is dropped); once
    that answer is in, id 5 may be used again on the same connection."""
    stack = acl_stack(stacks)
    before = settled(stack.envoy)
    sock = connect(stack.envoy)
    try:
        sock.sendall(produce("a-1", b"acks0-then-reuse", 0, 5) + metadata_all(6))
        (answer,) = read_frames(sock, 1)
        assert answer[:4] == (6).to_bytes(4, "big"), answer[:16]
        assert b"a-1" in answer and SECRET_TOPIC.encode() not in answer
        assert nothing_more(sock) == b""
        sock.sendall(metadata_all(5))
        (again,) = read_frames(sock, 1)
        assert again[:4] == (5).to_bytes(4, "big") and SECRET_TOPIC.encode() not in again
        assert nothing_more(sock, 0.2) == b""
    finally:
        close(sock)
    d = delta(settled(stack.envoy), before)
    assert d.get("kafka.responses_acks0") == 1, d
    assert not d.get("kafka.requests_duplicate_correlation") and not d.get("kafka.connections_closed_by_policy"), d
    assert b"acks0-then-reuse" in values(stack, "a-1")


def test_observe_only_a_duplicate_id_is_forwarded_and_counted(stacks):
    """Without stages (client metrics alone) the filter only watches: two requests with one id
    are both forwarded and answered, the connection stays open, the duplicate is counted."""
    stack = stacks.get("observe", {"client_metrics": {"max_clients": 10}})
    before = settled(stack.envoy)
    sock = connect(stack.envoy)
    try:
        sock.sendall(api_versions_v0(7, "team-a-x") + api_versions_v0(7, "team-a-x"))
        answers = read_frames(sock, 2)
        assert [a[:4] for a in answers] == [(7).to_bytes(4, "big")] * 2
        assert nothing_more(sock, 0.2) == b""
    finally:
        close(sock)
    d = delta(settled(stack.envoy), before)
    assert d.get("kafka.requests_duplicate_correlation") == 1, d
    assert not d.get("kafka.connections_closed_by_policy"), d


# ------------------------------------------------------------------------------------------
# 2. the correlation table overflows


def overflow_stream(n_small: int) -> bytes:
    """A long-polling Fetch (the broker holds it, and everything after it on the connection),
    an all-topics Metadata, a DescribeCluster, then n_small ApiVersions, each with its own id."""
    parts = [long_poll_fetch("a-1", 1), metadata_all(2), describe_cluster(3)]
    parts += [api_versions_v0(10 + i) for i in range(n_small)]
    return b"".join(parts)


@pytest.mark.parametrize("max_inflight, n_small", [(20, 30), (None, 10_050)], ids=["max-20", "default-10000"])
def test_an_overflowing_correlation_table_closes_before_forwarding(stacks, max_inflight, n_small):
    if max_inflight == 20:
        stack = acl_stack(stacks)
    else:
        fresh = "acl-default" not in stacks.made
        stack = stacks.get("acl-default", acls_config())
        if fresh:
            seed(stack, ["a-1", SECRET_TOPIC])
    bound = max_inflight or 10_000
    before = settled(stack.envoy)
    # After the flood, Produce requests (acks=1) to team-a's own topic: over the bound, so none
    # may reach the broker.
    markers = [b"after-overflow-%d-%d" % (bound, i) for i in range(5)]
    tail = b"".join(produce("a-1", m, 1, 900_000 + i) for i, m in enumerate(markers))
    started = time.monotonic()
    got, closed = connection_outcome(stack.envoy, [overflow_stream(n_small) + tail], timeout=15)
    took = time.monotonic() - started
    assert SECRET_TOPIC.encode() not in got, f"{SECRET_TOPIC} reached team-a's client"
    assert closed, f"the connection stayed open ({len(got)} bytes received)"
    # Closed at once, not when the long poll ended (10 s).
    assert took < 8, f"closed after {took:.1f}s"
    d = delta(settled(stack.envoy), before)
    print(f"max_inflight {bound}, {n_small + 3 + 5} requests: closed after {took:.2f}s, client got "
          f"{len(got)} bytes; counters {sorted((k, v) for k, v in d.items() if 'api.' not in k)}")
    assert d.get("kafka.inflight_overflow") == 1, d
    assert d.get("kafka.connections_closed_by_policy") == 1, d
    # The requests over the bound never reached the broker.
    assert not set(markers) & set(values(stack, "a-1"))


# ------------------------------------------------------------------------------------------
# 3. acks=0 Produce with real clients under a rule

RULE = {"rules": [{"name": "t", "match": {"client_id": {"prefix": "team-a"}}, "topics": {"prefix": "tn."}}]}
N_ACKS0 = 200


def rdkafka_acks0(bootstrap: str, topic: str, client_id: str, landed) -> tuple[int, list[str]]:
    """N_ACKS0 messages with acks=0; (messages the client reports sent, errors it reported). The
    producer stays open until `landed()` reaches that count (or 10 s pass): closing with unread
    answers would reset the connection and drop what the kernels still hold."""
    from confluent_kafka import Producer
    errors: list[str] = []
    sent = [0]

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            sent[0] += 1

    p = Producer({**rdkafka_common(bootstrap), "client.id": client_id, "acks": 0, "linger.ms": 0,
                  "enable.idempotence": False, "error_cb": lambda e: errors.append(str(e))})
    try:
        for i in range(N_ACKS0):
            # One Produce request each (flush returns once it is written: acks=0).
            p.produce(topic, value=b"acks0-%d" % i, partition=0, on_delivery=on_delivery)
            assert p.flush(10) == 0
        wait_landed(landed, sent[0], lambda: p.poll(0.05))
        p.poll(0.5)   # anything the client would report late
    finally:
        p.flush(1)
    return sent[0], errors


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def kafka_python_acks0(bootstrap: str, topic: str, client_id: str, landed) -> tuple[int, list[str]]:
    """As rdkafka_acks0; kafka-python's errors are its futures' and what it logs at ERROR (a
    connection it aborts, e.g. on an answer it did not ask for)."""
    from kafka import KafkaProducer
    errors: list[str] = []
    handler = _Collect(errors)
    logging.getLogger("kafka").addHandler(handler)
    p = KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks=0, linger_ms=0,
                      request_timeout_ms=10000)
    sent = 0
    try:
        futures = []
        for i in range(N_ACKS0):
            futures.append(p.send(topic, value=b"acks0-%d" % i, partition=0))
            p.flush(timeout=10)   # one Produce request each
        for f in futures:
            try:
                f.get(timeout=5)
                sent += 1
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(repr(e))
        wait_landed(landed, sent, lambda: time.sleep(0.05))
    finally:
        p.close(timeout=5)
        logging.getLogger("kafka").removeHandler(handler)
    return sent, errors


def wait_landed(landed, target: int, idle, timeout: float = 10.0, still: float = 1.5) -> None:
    """Until `landed()` reaches `target`, or stops growing for `still` seconds, or `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while (now := time.monotonic()) < deadline:
        cur = landed()
        if cur >= target:
            return
        if cur != last:
            last, since = cur, now
        elif now - since >= still:
            return
        idle()


ACKS0_PRODUCERS = {"rdkafka": rdkafka_acks0, "kafka-python": kafka_python_acks0}


@pytest.mark.parametrize("client", list(ACKS0_PRODUCERS))
def test_acks0_produce_under_a_rule_lands_whole_and_the_answers_are_dropped(stacks, client):
    run = ACKS0_PRODUCERS[client]
    stack = stacks.get("rule", RULE)
    direct = stacks.get("direct")
    logical = f"acks0-{client}"
    physical = f"tn.{logical}"
    seed(stack, [physical])
    seed(direct, [logical])
    before = settled(stack.envoy)

    sent, errors = run(stack.bootstrap, logical, "team-a-" + client,
                       lambda: high_watermark(stack.broker.port, physical))
    landed = wait_stable_hw(stack.broker.port, physical)
    d = delta(settled(stack.envoy), before)
    sent_direct, errors_direct = run(direct.bootstrap, logical, "team-a-" + client,
                                     lambda: high_watermark(direct.broker.port, logical))
    landed_direct = wait_stable_hw(direct.broker.port, logical)
    print(f"{client} acks=0: through the filter sent {sent}, landed {landed}, errors {errors[:3]}; "
          f"directly sent {sent_direct}, landed {landed_direct}, errors {errors_direct[:3]}; "
          f"counters {sorted((k, v) for k, v in d.items() if 'api.' not in k)}")
    assert not errors, errors[:5]
    assert sent == N_ACKS0 and landed == N_ACKS0, (sent, landed)
    # Nothing under the logical name on the broker: the rule mapped every request.
    with BrokerView(stack.broker.port) as view:
        assert logical not in view.topics()
        assert sorted(view.values(physical), key=lambda v: int(v.split(b"-")[1])) == [
            b"acks0-%d" % i for i in range(N_ACKS0)]
    # tansu answered every acks=0 Produce request (one per message); the client got none of
    # those answers.
    assert d.get("kafka.responses_acks0", 0) == N_ACKS0, d
    assert not d.get("kafka.connections_closed_by_policy"), d
    assert not d.get("kafka.responses_unmatched"), d
    # Differential: through the filter at least as good as directly (kafka-python directly aborts
    # its connection on tansu's unexpected answers and drops what it had queued).
    assert landed >= landed_direct, (landed, landed_direct)


def test_many_pipelined_acks0_produce_around_one_request_get_exactly_its_answer(stacks):
    """What librdkafka does (observed: a GetTelemetrySubscriptions among its acks=0 Produce
    requests), raw and deterministic: 70 acks=0 Produce (ids 1-70), an ApiVersions (id 71), 9
    more acks=0 Produce (ids 72-80), in one write, under a rule. More acks=0 ids than the filter
    keeps one by one (they fold into ranges), and a request after them that waits: Kafka sends
    one answer, id 71, and the connection stays open; every record lands."""
    stack = stacks.get("rule", RULE)
    seed(stack, ["tn.ring"])
    before = settled(stack.envoy)
    ids = list(range(1, 71)) + list(range(72, 81))
    data = b"".join(produce("ring", b"ring-%d" % i, 0, i, client_id="team-a-raw") for i in range(1, 71))
    data += api_versions_v0(71, "team-a-raw")
    data += b"".join(produce("ring", b"ring-%d" % i, 0, i, client_id="team-a-raw") for i in range(72, 81))
    sock = connect(stack.envoy)
    try:
        sock.sendall(data)
        (answer,) = read_frames(sock, 1)
        assert answer[:4] == (71).to_bytes(4, "big"), answer[:16]
        assert nothing_more(sock, 1.0) == b""
    finally:
        close(sock)
    d = delta(settled(stack.envoy), before)
    assert not d.get("kafka.connections_closed_by_policy") and not d.get("kafka.responses_unmatched"), d
    assert d.get("kafka.responses_acks0") == len(ids), d
    assert sorted(values(stack, "tn.ring")) == sorted(b"ring-%d" % i for i in ids)


def test_acks0_produce_with_non_consecutive_ids_is_not_punished(stacks):
    """Correlation ids need not be consecutive on a connection (the Java client numbers its
    requests per client, across all its broker connections): 100 acks=0 Produce requests with
    even ids, in one write, under a rule. Kafka sends nothing back; the connection stays open and
    every record lands."""
    stack = stacks.get("rule", RULE)
    seed(stack, ["tn.scattered"])
    before = settled(stack.envoy)
    data = b"".join(produce("scattered", b"sc-%d" % i, 0, 2 * i, client_id="team-a-raw") for i in range(1, 101))
    sock = connect(stack.envoy)
    try:
        sock.sendall(data)
        assert nothing_more(sock, 1.0) == b""
    finally:
        close(sock)
    d = delta(settled(stack.envoy), before)
    assert not d.get("kafka.connections_closed_by_policy"), d
    assert sorted(values(stack, "tn.scattered")) == sorted(b"sc-%d" % i for i in range(1, 101))


def wait_stable_hw(port: int, topic: str) -> int:
    last, same = -1, 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and same < 3:
        cur = high_watermark(port, topic)
        same = same + 1 if cur == last else 1
        last = cur
        time.sleep(0.1)
    return last


# ------------------------------------------------------------------------------------------
# 4. reconnecting escapes no limit

BYTE_RATE = 204_800
REQUEST_RATE = 20
PRODUCE_VALUE = 64 * 1024 - 200
WINDOW_S = 10.0
REQ_WINDOW_S = 5.0
SETTLE_S = 1.0

# Per client id, as Kafka's client quotas: the flooder's bytes, the asker's requests (any API).
# The control runs use client ids no limit matches, in the same Envoy.
LIMITS = {"limits": [
    {"name": "per-client-bytes", "match": {"client_id": {"exact": "flooder"}}, "key": "client_id",
     "produce_bytes_per_second": {"rate": BYTE_RATE, "burst": BYTE_RATE}},
    {"name": "per-client-requests", "match": {"client_id": {"exact": "asker"}}, "key": "client_id",
     "requests_per_second": REQUEST_RATE},
    {"name": "per-client-topic-bytes", "match": {"client_id": {"exact": "topic-flooder"}},
     "key": "client_id", "per_topic": True,
     "produce_bytes_per_second": {"rate": BYTE_RATE, "burst": BYTE_RATE}},
]}


def fire_connections(port: int, frames, per_second: float, seconds: float) -> list[socket.socket]:
    """Open a new connection for each frame, write it, never read: `per_second` of them for
    `seconds`. The sockets are returned open."""
    socks = []
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + n / per_second
        if now < due:
            time.sleep(due - now)
            continue
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(frames(n))
        socks.append(s)
        n += 1
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


@pytest.mark.parametrize("client_id, workers",
                         [("flooder", 1), ("free-flooder", 1), ("flooder", 2), ("topic-flooder", 1)],
                         ids=["limited", "control", "limited-2-workers", "limited-per-topic"])
def test_a_client_reconnecting_for_every_produce_gets_no_more_than_its_byte_rate(stacks, client_id, workers):
    """A new connection for each 64 KiB Produce (acks=1), 25 a second, never reading an answer;
    what landed on the broker by the end of the window (plus a settle) is bounded by the
    limit's rate and burst, per client id or (`per_topic`) per client id and topic. Control: a
    client id under no limit, same Envoy. With two workers the connections land on both (one
    bucket per key in Envoy's shared data)."""
    stack = stacks.get("limits" if workers == 1 else f"limits-{workers}", LIMITS, concurrency=workers)
    limited = client_id != "free-flooder"
    topic = f"flood-{client_id}"
    seed(stack, [topic])
    frame_len = len(produce(topic, b"v" * PRODUCE_VALUE, 1, 1, client_id=client_id, version=7))
    assert 60_000 < frame_len <= 64 * 1024, frame_len
    # The control run needs less time to show what an unlimited client gets.
    window = WINDOW_S if client_id == "flooder" and workers == 1 else WINDOW_S / 2
    started = time.monotonic()
    socks = fire_connections(stack.envoy.listener_port,
                             lambda n: produce(topic, b"v" * PRODUCE_VALUE, 1, n + 1, client_id=client_id,
                                               version=7),
                             per_second=25, seconds=window)
    try:
        time.sleep(max(0.0, started + window + SETTLE_S - time.monotonic()))
        elapsed = time.monotonic() - started
        landed = high_watermark(stack.broker.port, topic)
    finally:
        close_all(socks)
    delivered = landed * frame_len
    bound = 1.2 * (BYTE_RATE * elapsed + BYTE_RATE)
    offered = len(socks) * frame_len
    print(f"{'limited' if limited else 'control'}: {len(socks)} connections offered {offered} bytes; "
          f"{landed} Produce landed in {elapsed:.1f}s = {delivered} bytes (bound {bound:.0f})")
    if limited:
        assert delivered <= bound, f"{delivered} bytes landed in {elapsed:.1f}s, over {bound:.0f}"
        # Hanging up is no way out either: what the closed connections still held is not
        # forwarded at once (at most what the rate has paid for since).
        time.sleep(1.0)
        later = time.monotonic() - started
        after_close = high_watermark(stack.broker.port, topic) * frame_len
        bound_later = 1.2 * (BYTE_RATE * later + BYTE_RATE)
        print(f"  1 s after closing all: {after_close} bytes (bound {bound_later:.0f})")
        assert after_close <= bound_later, f"{after_close} bytes landed by {later:.1f}s, over {bound_later:.0f}"
    else:
        assert delivered >= 3 * bound, f"the control run delivered only {delivered} bytes"
    if workers > 1:
        per_worker = {k: v for k, v in stack.envoy.stats().values.items()
                      if ".worker_" in k and k.endswith(".downstream_cx_total") and k.startswith("listener.")}
        assert sum(1 for v in per_worker.values() if v > 0) == workers, per_worker


@pytest.mark.parametrize("limited", [True, False], ids=["limited", "control"])
def test_a_client_reconnecting_for_every_request_gets_no_more_than_its_request_rate(stacks, limited):
    """A new connection for each Metadata request, 60 a second, each answer read: the answers
    that came within the window (plus a settle) are bounded by the limit's rate and burst.
    Control: a client id under no limit, same Envoy."""
    stack = stacks.get("limits", LIMITS)
    client_id = "asker" if limited else "free-asker"
    seed(stack, ["few"])
    window = REQ_WINDOW_S if limited else REQ_WINDOW_S / 2
    started = time.monotonic()
    socks = fire_connections(stack.envoy.listener_port, lambda n: metadata_one("few", n + 1, client_id),
                             per_second=60, seconds=window)
    try:
        answered = count_answered(socks, started + window + SETTLE_S)
        elapsed = time.monotonic() - started
    finally:
        close_all(socks)
    bound = 1.2 * (REQUEST_RATE * elapsed + REQUEST_RATE)
    print(f"{'limited' if limited else 'control'}: {len(socks)} Metadata requests on as many connections, "
          f"{answered} answered within {elapsed:.1f}s (bound {bound:.0f})")
    if limited:
        assert answered <= bound, f"{answered} answered in {elapsed:.1f}s, over {bound:.0f}"
    else:
        assert answered >= 0.9 * len(socks) and answered >= 1.5 * bound, \
            f"the control run got only {answered} answers"


def read_until(socks: list[socket.socket], until: float, stop) -> dict[socket.socket, tuple[bytes, bool]]:
    """Read every socket until `until` (monotonic) or until stop(buf, eof) holds for all of
    them: {socket: (bytes read, closed by the other end)}."""
    state = {s: (bytearray(), False) for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    pending = len(socks)
    try:
        while pending and (left := until - time.monotonic()) > 0:
            for key, _ in sel.select(min(left, 0.05)):
                s = key.fileobj
                buf, _ = state[s]
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                buf += chunk
                if not chunk:
                    state[s] = (buf, True)
                if stop(buf, not chunk):
                    sel.unregister(s)
                    pending -= 1
    finally:
        sel.close()
    return {s: (bytes(b), eof) for s, (b, eof) in state.items()}


def whole_frame(buf: bytes) -> bool:
    return len(buf) >= 4 and len(buf) - 4 >= int.from_bytes(buf[:4], "big")


def count_answered(socks: list[socket.socket], until: float) -> int:
    """Connections that received at least one whole response frame before `until`."""
    got = read_until(socks, until, lambda buf, eof: eof or whole_frame(buf))
    return sum(1 for buf, _ in got.values() if whole_frame(buf))


# ------------------------------------------------------------------------------------------
# 5. log lines a client can cause

# The filter's bound on the warnings clients can cause, per worker and second (issue 25, 6).
LOG_LINES_PER_WORKER_SECOND = 50   # client_log::PER_WORKER_PER_SECOND


def warning_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "[warning]" in ln or "[error]" in ln or "[critical]" in ln]


def test_a_flood_of_warnings_is_bounded_and_counted(stacks):
    stack = stacks.get("rule", RULE)   # max_inflight_requests: the default, 10,000
    seed(stack, ["tn.wait"])
    envoy = stack.envoy
    before = settled(envoy)
    log_before = len(envoy.log_text().splitlines())

    # One connection: 12,000 tiny requests in one write, behind a long poll (the broker answers
    # a connection's requests in order, so all of them wait).
    flood = long_poll_fetch("wait", 1, "team-a-x") + b"".join(
        api_versions_v0(i + 2, "team-a-x") for i in range(12_000))
    got, closed = connection_outcome(envoy, [flood], timeout=15)
    assert closed, f"the connection stayed open ({len(got)} bytes received)"
    time.sleep(0.5)   # Envoy writes its log every 200 ms here
    one = warning_lines("\n".join(envoy.log_text().splitlines()[log_before:]))
    print(f"one connection, 12,000 requests: {len(one)} warning lines: {one[:5]}")
    assert len(one) <= 5, one[:10]

    # Many connections, each causing a warning: a duplicate correlation id (two requests with
    # id 7 in one write), under the rule.
    log_before = len(envoy.log_text().splitlines())
    started = time.monotonic()
    n = 2_000
    closed_count = 0
    for batch in range(0, n, 200):
        socks = []
        for i in range(batch, min(n, batch + 200)):
            s = socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=5)
            s.sendall(api_versions_v0(7, "team-a-x") + api_versions_v0(7, "team-a-x"))
            socks.append(s)
        closed_count += wait_all_closed(socks, 10)
        close_all(socks)
    elapsed = time.monotonic() - started
    after = settled(envoy)
    time.sleep(0.5)
    lines = warning_lines("\n".join(envoy.log_text().splitlines()[log_before:]))
    d = delta(after, before)
    print(f"{n} connections in {elapsed:.1f}s: {closed_count} closed by Envoy, {len(lines)} warning lines, "
          f"counters {sorted((k, v) for k, v in d.items() if 'api.' not in k)}; first lines {lines[:3]}")
    assert closed_count == n
    assert d.get("kafka.requests_duplicate_correlation", 0) >= n, d
    assert d.get("kafka.inflight_overflow") == 1, d   # the first connection's
    bound = LOG_LINES_PER_WORKER_SECOND * (elapsed + 2)
    assert len(lines) <= bound, f"{len(lines)} warning lines in {elapsed:.1f}s (bound {bound:.0f}): {lines[-3:]}"
    assert "kafka.log_lines_suppressed" in after, sorted(after)
    assert d.get("kafka.log_lines_suppressed", 0) > 0, d
    assert d["kafka.log_lines_suppressed"] + len(lines) >= n, (d, len(lines))


def wait_all_closed(socks: list[socket.socket], timeout: float) -> int:
    """How many of the sockets the other end closed within `timeout` (reading what they got)."""
    got = read_until(socks, time.monotonic() + timeout, lambda buf, eof: eof)
    return sum(1 for _, eof in got.values() if eof)
