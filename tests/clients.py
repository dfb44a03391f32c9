"""Client-side workloads and request counting for the end-to-end tests.

Two independent Kafka client implementations drive the traffic: confluent-kafka (librdkafka) and
kafka-python (pure Python). Everything here is also used by examples/demo.py.

Counting on the client side
---------------------------
librdkafka: its statistics (`statistics.interval.ms`, brokers.*.req) are per broker *handle*, and
librdkafka 2.16 decommissions the bootstrap broker handle right after its first Metadata response
(before any statistics are emitted), so its ApiVersion and Metadata requests never show up in the
statistics. The complete record is librdkafka's own protocol debug log (`debug=protocol`), which logs
one "Sent <Name>Request" line for every request written to a socket and one "Received
<Name>Response" line for every response read: that is what `RdkafkaCounter` counts (read from
stderr, see its docstring); the statistics are kept and cross-checked against the log for the
broker handles they do cover.

kafka-python: every request of every connection goes through
`kafka.protocol.parser.KafkaProtocol.send_bytes()` (already framed) and every response through
`receive_bytes()`; `KafkaPythonCounter` wraps both and parses the frames, so it counts what is on
the wire, by API key.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

# --------------------------------------------------------------------------------------------
# API names: the kafka-protocol crate's ApiKey enum (0.18), which the filter uses in metric names.

CRATE_API_NAMES: dict[int, str] = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics",
    20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls", 32: "DescribeConfigs",
    33: "AlterConfigs", 34: "AlterReplicaLogDirs", 35: "DescribeLogDirs", 36: "SaslAuthenticate",
    37: "CreatePartitions", 38: "CreateDelegationToken", 39: "RenewDelegationToken",
    40: "ExpireDelegationToken", 41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments", 46: "ListPartitionReassignments",
    47: "OffsetDelete", 48: "DescribeClientQuotas", 49: "AlterClientQuotas",
    50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials", 52: "Vote",
    53: "BeginQuorumEpoch", 54: "EndQuorumEpoch", 55: "DescribeQuorum", 56: "AlterPartition",
    57: "UpdateFeatures", 58: "Envelope", 59: "FetchSnapshot", 60: "DescribeCluster",
    61: "DescribeProducers", 62: "BrokerRegistration", 63: "BrokerHeartbeat", 64: "UnregisterBroker",
    65: "DescribeTransactions", 66: "ListTransactions", 67: "AllocateProducerIds",
    68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe", 70: "ControllerRegistration",
    71: "GetTelemetrySubscriptions", 72: "PushTelemetry", 73: "AssignReplicasToDirs",
    74: "ListConfigResources", 75: "DescribeTopicPartitions", 76: "ShareGroupHeartbeat",
    77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge", 80: "AddRaftVoter",
    81: "RemoveRaftVoter", 82: "UpdateRaftVoter", 83: "InitializeShareGroupState",
    84: "ReadShareGroupState", 85: "WriteShareGroupState", 86: "DeleteShareGroupState",
    87: "ReadShareGroupStateSummary", 90: "DescribeShareGroupOffsets", 91: "AlterShareGroupOffsets",
    92: "DeleteShareGroupOffsets",
}
CRATE_API_KEYS: dict[str, int] = {v: k for k, v in CRATE_API_NAMES.items()}
UNKNOWN_API = "unknown"


def crate_api_name(api_key: int) -> str:
    """The metric name segment the filter uses for an API key."""
    return CRATE_API_NAMES.get(api_key, UNKNOWN_API)


# librdkafka 2.16's rd_kafka_ApiKey2str() names (read from the bundled librdkafka .so) that differ
# from the crate's. Keys 4..7 (LeaderAndIsr, StopReplica, UpdateMetadata, ControlledShutdown) are
# not in the crate; names it does not know are printed as "Unknown-<key>?".
_RDKAFKA_RENAMES = {
    "ApiVersion": "ApiVersions",
    "AlterIsrRequest": "AlterPartition",
    "LeaderAndIsr": UNKNOWN_API,
    "StopReplica": UNKNOWN_API,
    "UpdateMetadata": UNKNOWN_API,
    "ControlledShutdown": UNKNOWN_API,
}
_RDKAFKA_UNKNOWN = re.compile(r"^Unknown-(\d+)\?$")


def rdkafka_to_crate(name: str) -> str:
    """Map a librdkafka API name (statistics `req` key or log name) to the crate's name."""
    if name in _RDKAFKA_RENAMES:
        return _RDKAFKA_RENAMES[name]
    m = _RDKAFKA_UNKNOWN.match(name)
    if m:
        return crate_api_name(int(m.group(1)))
    if name in CRATE_API_KEYS:
        return name
    # librdkafka suffixes the newer ones with "Request" (ElectLeadersRequest, VoteRequest, ...).
    if name.endswith("Request") and name[: -len("Request")] in CRATE_API_KEYS:
        return name[: -len("Request")]
    raise ValueError(f"unmapped librdkafka API name {name!r}")


# --------------------------------------------------------------------------------------------
# Deterministic messages

SMALL_MIN, SMALL_MAX = 100, 10 * 1024
LARGE_MIN, LARGE_MAX = 64 * 1024, 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)

class PlannedMessage:
    seq: int
    partition: int
    size: int  # value size in bytes


def message_plan(seed: int, count: int, large: int, partitions: int) -> list[PlannedMessage]:
    """count messages: count-large small ones (log-uniform 100 B .. 10 KiB) and `large` big ones
    (64 KiB .. 1 MiB; the first and last big ones exactly 1 MiB) at random positions.
    Partition = seq % partitions, so each partition's expected order is known."""
    rng = random.Random(seed)
    big_positions = set(rng.sample(range(count), large)) if large else set()
    big_sizes = [MIB] + [rng.randint(LARGE_MIN, LARGE_MAX) for _ in range(max(0, large - 2))] + [MIB]
    big_sizes = big_sizes[:large]
    plan = []
    bi = 0
    for seq in range(count):
        if seq in big_positions:
            size = big_sizes[bi]
            bi += 1
        else:
            size = int(math.exp(rng.uniform(math.log(SMALL_MIN), math.log(SMALL_MAX + 1))))
            size = max(SMALL_MIN, min(SMALL_MAX, size))
        plan.append(PlannedMessage(seq, seq % partitions, size))
    return plan


def message_key(seed: int, seq: int) -> bytes:
    return f"key-{seed}-{seq}".encode()


def message_value(seed: int, seq: int, size: int) -> bytes:
    """size bytes: a readable prefix with the sequence number, then seeded random bytes."""
    prefix = f"seq={seq:08d};seed={seed};size={size};".encode()
    rest = random.Random((seed << 32) ^ seq).randbytes(max(0, size - len(prefix)))
    return (prefix + rest)[:size]


def message_headers(seed: int, seq: int) -> list[tuple[str, bytes]]:
    return [("seq", str(seq).encode()), ("seed", str(seed).encode())]


_SEQ_RE = re.compile(rb"^seq=(\d{8});")


def seq_of(value: bytes) -> int:
    m = _SEQ_RE.match(value[:16])
    if not m:
        raise AssertionError(f"consumed value has no sequence prefix: {value[:40]!r}")
    return int(m.group(1))


class ConsumeChecker:
    """Checks consumed messages against the plan: byte-exact key/value/headers, per-partition order,
    no duplicates, nothing missing."""

    def __init__(self, seed: int, plan: list[PlannedMessage]):
        self.seed = seed
        self.plan = {m.seq: m for m in plan}
        self.expected_order: dict[int, list[int]] = collections.defaultdict(list)
        for m in plan:
            self.expected_order[m.partition].append(m.seq)
        self.got: dict[int, list[int]] = collections.defaultdict(list)
        self.seen: set[int] = set()
        self.errors: list[str] = []
        self.bytes = 0

    @property
    def count(self) -> int:
        return len(self.seen)

    def done(self) -> bool:
        return len(self.seen) >= len(self.plan)

    def add(self, partition: int, key: bytes | None, value: bytes | None,
            headers: Iterable[tuple[str, bytes]] | None) -> None:
        if value is None:
            self.errors.append(f"partition {partition}: null value")
            return
        seq = seq_of(value)
        pm = self.plan.get(seq)
        if pm is None:
            self.errors.append(f"unexpected seq {seq}")
            return
        self.bytes += len(value)
        if seq in self.seen:
            self.errors.append(f"duplicate seq {seq}")
        self.seen.add(seq)
        if partition != pm.partition:
            self.errors.append(f"seq {seq} on partition {partition}, produced to {pm.partition}")
        if value != message_value(self.seed, seq, pm.size):
            self.errors.append(f"seq {seq}: value differs (len {len(value)} vs {pm.size})")
        if key != message_key(self.seed, seq):
            self.errors.append(f"seq {seq}: key differs: {key!r}")
        hdrs = [(k, bytes(v) if v is not None else None) for k, v in (headers or [])]
        if hdrs != message_headers(self.seed, seq):
            self.errors.append(f"seq {seq}: headers differ: {hdrs!r}")
        self.got[partition].append(seq)

    def verify(self) -> None:
        problems = list(self.errors[:20])
        missing = len(self.plan) - len(self.seen)
        if missing:
            problems.append(f"{missing} of {len(self.plan)} messages never arrived")
        for p, exp in self.expected_order.items():
            got = self.got.get(p, [])
            if got != exp:
                first = next((i for i, (a, b) in enumerate(zip(got, exp)) if a != b), min(len(got), len(exp)))
                problems.append(f"partition {p}: order differs at index {first} "
                                f"(got {got[first:first + 3]}, expected {exp[first:first + 3]}; "
                                f"{len(got)} vs {len(exp)} messages)")
        if problems:
            raise AssertionError("consumed messages do not match what was produced:\n  "
                                 + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------
# librdkafka (confluent-kafka)

_RD_SENT = re.compile(r"\]: (\S+): Sent (\w+?)Request \(v(\d+),")
_RD_RECV = re.compile(r"\]: (\S+): Received (\w+?)Response \(v(\d+),")
_RD_CLIENT = re.compile(r"\|(rdkafka#[^|]+)\|")


class RdkafkaCounter:
    """Counts every request librdkafka sends and every response it reads, from its protocol log.

    librdkafka writes its log to stderr from its own threads, synchronously, when no Python logger
    is configured. (With confluent-kafka's `logger` the lines are queued and only delivered by
    poll(), so whatever a client logs while it closes, e.g. the Metadata request a consumer sends
    on close, is lost.) So this redirects file descriptor 2 to a file while active:

        with RdkafkaCounter(tmp_path / "rdkafka.log") as counter:
            Producer({..., **counter.conf()})
            ...
        sent, received = counter.snapshot()

    Every client that uses counter.conf() must be destroyed inside the block.
    """

    def __init__(self, path: str | os.PathLike, stats_interval_ms: int = 200):
        self.path = os.fspath(path)
        self.stats_interval_ms = stats_interval_ms
        self._lock = threading.Lock()
        self._saved_fd: int | None = None
        self.stats: dict[str, dict] = {}  # client name -> last statistics document
        self.stats_snapshots = 0

    def __enter__(self) -> "RdkafkaCounter":
        open(self.path, "wb").close()
        sys.stderr.flush()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._saved_fd = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        if self._saved_fd is not None:
            os.dup2(self._saved_fd, 2)
            os.close(self._saved_fd)
            self._saved_fd = None

    def conf(self, stats: bool = True) -> dict:
        c: dict[str, Any] = {"debug": "protocol"}
        if stats:
            c["statistics.interval.ms"] = self.stats_interval_ms
            c["stats_cb"] = self._on_stats
        return c

    def _on_stats(self, doc: str) -> None:
        d = json.loads(doc)
        with self._lock:
            self.stats[d.get("name", "?")] = d
            self.stats_snapshots += 1

    def _parse(self) -> tuple[collections.Counter, collections.Counter, dict, set]:
        sent: collections.Counter = collections.Counter()
        received: collections.Counter = collections.Counter()
        by_broker: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        names: set[str] = set()
        with open(self.path, "r", errors="replace") as f:
            for line in f:
                m = _RD_SENT.search(line)
                if m:
                    names.add(m.group(2))
                    api = rdkafka_to_crate(m.group(2))
                    sent[api] += 1
                    c = _RD_CLIENT.search(line)
                    by_broker[(c.group(1) if c else "?", m.group(1))][api] += 1
                    continue
                m = _RD_RECV.search(line)
                if m:
                    received[rdkafka_to_crate(m.group(2))] += 1
        return sent, received, by_broker, names

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """({api: requests sent}, {api: responses read}) so far, in the crate's API names."""
        sent, received, _, _ = self._parse()
        return dict(sent), dict(received)

    def raw_names(self) -> set[str]:
        """librdkafka's own names of the requests it sent."""
        return self._parse()[3]

    def stats_requests(self) -> dict[tuple[str, str], dict[str, int]]:
        """(client name, broker name) -> {crate api: count} from the latest statistics of each client."""
        out = {}
        with self._lock:
            for client, d in self.stats.items():
                for bname, b in d.get("brokers", {}).items():
                    out[(client, bname)] = {rdkafka_to_crate(k): v for k, v in b.get("req", {}).items() if v}
        return out

    def log_requests_for(self, client: str, broker: str) -> dict[str, int]:
        return dict(self._parse()[2].get((client, broker), {}))


def rdkafka_common(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        # 1 MiB values plus record overhead.
        "message.max.bytes": 4 * MIB,
        "receive.message.max.bytes": 64 * MIB,
    }


def rdkafka_create_topic(bootstrap: str, topic: str, partitions: int, extra: dict | None = None,
                         timeout: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({**rdkafka_common(bootstrap), **(extra or {})})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    for f in futures.values():
        f.result(timeout)
    # Wait until the topic's partitions are visible in metadata.
    def visible() -> bool:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions
    _wait(visible, timeout, f"topic {topic} in metadata")
    # The admin client is destroyed when this returns (nothing else refers to it).


def _wait(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rdkafka_produce(bootstrap: str, topic: str, seed: int, plan: list[PlannedMessage],
                    extra: dict | None = None, timeout: float = 120.0) -> dict[int, list[tuple[int, int]]]:
    """Produce the plan with librdkafka (idempotent, acks=all). Returns partition -> [(offset, seq)]."""
    from confluent_kafka import Producer
    conf = {**rdkafka_common(bootstrap), "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, **(extra or {})}
    producer = Producer(conf)
    delivered: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(f"{err}")
        else:
            delivered[msg.partition()].append((msg.offset(), seq_of(msg.value())))

    deadline = time.monotonic() + timeout
    for pm in plan:
        while True:
            try:
                producer.produce(topic, value=message_value(seed, pm.seq, pm.size), key=message_key(seed, pm.seq),
                                 partition=pm.partition, headers=message_headers(seed, pm.seq),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise TimeoutError("producer queue stayed full")
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    producer.close()
    if remaining:
        raise AssertionError(f"{remaining} messages still undelivered after flush")
    if errors:
        raise AssertionError(f"{len(errors)} delivery errors, first: {errors[:5]}")
    _check_offsets(delivered, plan)
    return delivered


def _check_offsets(delivered: dict[int, list[tuple[int, int]]], plan: list[PlannedMessage]) -> None:
    expected: dict[int, list[int]] = collections.defaultdict(list)
    for pm in plan:
        expected[pm.partition].append(pm.seq)
    for p, exp in expected.items():
        got = [seq for _, seq in sorted(delivered.get(p, []))]
        if got != exp:
            raise AssertionError(f"partition {p}: broker offsets do not follow produce order "
                                 f"({len(got)} delivered, {len(exp)} produced)")


def rdkafka_consume_group(bootstrap: str, topic: str, group: str, checker: ConsumeChecker,
                          extra: dict | None = None, timeout: float = 120.0) -> None:
    """Consume with a librdkafka consumer group until the checker has everything (or timeout);
    then pause, let in-flight fetches come back, and close (so every request has its response)."""
    from confluent_kafka import Consumer
    conf = {**rdkafka_common(bootstrap), "group.id": group, "auto.offset.reset": "earliest",
            # tansu completes a JoinGroup only after about half the session timeout.
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
            "fetch.max.bytes": 16 * MIB, "max.partition.fetch.bytes": 2 * MIB,
            "fetch.wait.max.ms": 100, "enable.auto.commit": True, **(extra or {})}
    consumer = Consumer(conf)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not checker.done() and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error():
                    checker.errors.append(f"consumer error: {msg.error()}")
                    continue
                checker.add(msg.partition(), msg.key(), msg.value(), msg.headers())
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            consumer.poll(0.1)
    finally:
        consumer.close()


def rdkafka_produce_acks0(bootstrap: str, topic: str, count: int, extra: dict | None = None,
                          before_close: Callable[[], None] | None = None) -> None:
    """count small messages with acks=0 (Produce requests that get no response), one per request.

    With acks=0, flush() returns once a request is written to the socket, not once anyone read
    it. tansu answers acks=0 Produce anyway, so the client closes with those answers unread and
    its kernel resets the connection (RST): requests still queued in a socket buffer on either
    side are then dropped by the kernels, before Envoy ever reads them. `before_close` lets a
    test wait, on the open connection, for what the other end has seen.
    """
    from confluent_kafka import Producer
    producer = Producer({**rdkafka_common(bootstrap), "acks": 0, "linger.ms": 0,
                         "enable.idempotence": False, **(extra or {})})
    for i in range(count):
        producer.produce(topic, value=b"acks0-%d" % i, partition=0)
        producer.flush(10)
    if before_close is not None:
        before_close()
    producer.close()


# --------------------------------------------------------------------------------------------
# kafka-python


class KafkaPythonCounter:
    """Counts kafka-python's requests and responses at its protocol layer, by API key.

    Use as a context manager: while active, KafkaProtocol.send_bytes/receive_bytes are wrapped.
    """

    def __init__(self) -> None:
        self.sent: collections.Counter = collections.Counter()
        self.received: collections.Counter = collections.Counter()
        self.sent_versions: collections.Counter = collections.Counter()  # (api, version)
        self.unmatched = 0
        self._lock = threading.Lock()
        self._patches: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> "KafkaPythonCounter":
        from kafka.protocol.parser import KafkaProtocol
        counter = self
        orig_send = KafkaProtocol.send_bytes
        orig_recv = KafkaProtocol.receive_bytes

        def send_bytes(proto_self):  # type: ignore[no-untyped-def]
            data = orig_send(proto_self)
            if data:
                counter._on_sent(proto_self, bytes(data))
            return data

        def receive_bytes(proto_self, data):  # type: ignore[no-untyped-def]
            if data:
                counter._on_received(proto_self, bytes(data))
            return orig_recv(proto_self, data)

        KafkaProtocol.send_bytes = send_bytes
        KafkaProtocol.receive_bytes = receive_bytes
        self._patches = [(KafkaProtocol, "send_bytes", orig_send), (KafkaProtocol, "receive_bytes", orig_recv)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for obj, name, orig in self._patches:
            setattr(obj, name, orig)
        self._patches = []

    def _state(self, proto: Any) -> dict:
        st = proto.__dict__.get("_e2e_counter_state")
        if st is None:
            st = {"corr": {}, "rbuf": bytearray()}
            proto.__dict__["_e2e_counter_state"] = st
        return st

    def _on_sent(self, proto: Any, data: bytes) -> None:
        st = self._state(proto)
        i = 0
        with self._lock:
            while i + 4 <= len(data):
                size = int.from_bytes(data[i:i + 4], "big")
                frame = data[i + 4:i + 4 + size]
                if len(frame) < 8:
                    raise AssertionError("kafka-python sent a partial frame in one send_bytes() call")
                api_key = int.from_bytes(frame[0:2], "big", signed=True)
                version = int.from_bytes(frame[2:4], "big", signed=True)
                corr = int.from_bytes(frame[4:8], "big", signed=True)
                api = crate_api_name(api_key)
                self.sent[api] += 1
                self.sent_versions[(api, version)] += 1
                if not (api_key == 0 and _produce_acks(frame) == 0):
                    st["corr"][corr] = api
                i += 4 + size
            if i != len(data):
                raise AssertionError("kafka-python send_bytes() returned a partial frame")

    def _on_received(self, proto: Any, data: bytes) -> None:
        st = self._state(proto)
        with self._lock:
            buf = st["rbuf"]
            buf += data
            while len(buf) >= 8:
                size = int.from_bytes(buf[0:4], "big")
                if len(buf) < 4 + size:
                    break
                corr = int.from_bytes(buf[4:8], "big", signed=True)
                api = st["corr"].pop(corr, None)
                if api is None:
                    self.unmatched += 1   # e.g. tansu's answers to acks=0 Produce requests
                else:
                    self.received[api] += 1
                del buf[:4 + size]

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.sent), dict(self.received)


def _produce_acks(frame: bytes) -> int | None:
    """acks of a Produce request frame (header v1 or v2, body starting transactional_id, acks)."""
    version = int.from_bytes(frame[2:4], "big", signed=True)
    i = 8
    cid_len = int.from_bytes(frame[i:i + 2], "big", signed=True)
    i += 2 + max(cid_len, 0)
    if version >= 9:  # flexible: header tagged fields, compact nullable transactional_id
        tagged, i = _uvarint(frame, i)
        for _ in range(tagged):
            _, i = _uvarint(frame, i)
            size, i = _uvarint(frame, i)
            i += size
        n, i = _uvarint(frame, i)
        i += max(n - 1, 0)
    elif version >= 3:
        n = int.from_bytes(frame[i:i + 2], "big", signed=True)
        i += 2 + max(n, 0)
    if len(frame) < i + 2:
        return None
    return int.from_bytes(frame[i:i + 2], "big", signed=True)


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def kafka_python_common(bootstrap: str) -> dict:
    return {"bootstrap_servers": bootstrap, "request_timeout_ms": 30000}


def kafka_python_create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0,
                              extra: dict | None = None) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(**{**kafka_python_common(bootstrap), **(extra or {})})
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        _wait(lambda: topic in admin.list_topics(), timeout, f"topic {topic}")
    finally:
        admin.close()


def kafka_python_produce(bootstrap: str, topic: str, seed: int, plan: list[PlannedMessage],
                         timeout: float = 120.0, extra: dict | None = None) -> dict[int, list[tuple[int, int]]]:
    from kafka import KafkaProducer
    producer = KafkaProducer(**{**kafka_python_common(bootstrap), "acks": "all", "enable_idempotence": True,
                                "linger_ms": 5, "max_request_size": 4 * MIB, "batch_size": 256 * 1024,
                                **(extra or {})})
    delivered: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    try:
        futures = []
        for pm in plan:
            f = producer.send(topic, value=message_value(seed, pm.seq, pm.size), key=message_key(seed, pm.seq),
                              partition=pm.partition, headers=message_headers(seed, pm.seq))
            futures.append((pm.seq, f))
        producer.flush(timeout=timeout)
        errors = []
        for seq, f in futures:
            try:
                md = f.get(timeout=1)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"seq {seq}: {e!r}")
                continue
            delivered[md.partition].append((md.offset, seq))
        if errors:
            raise AssertionError(f"{len(errors)} delivery errors, first: {errors[:5]}")
    finally:
        producer.close(timeout=10)
    _check_offsets(delivered, plan)
    return delivered


def kafka_python_consume(bootstrap: str, topic: str, partitions: int, checker: ConsumeChecker,
                         group: str | None = None, timeout: float = 120.0, extra: dict | None = None) -> None:
    """Consume with kafka-python, with a consumer group (subscribe) or, with group=None, by
    manual assignment of all partitions. Pauses and drains in-flight fetches before closing."""
    from kafka import KafkaConsumer, TopicPartition
    conf = dict(**kafka_python_common(bootstrap), auto_offset_reset="earliest",
                max_partition_fetch_bytes=2 * MIB, fetch_max_bytes=16 * MIB, fetch_max_wait_ms=100)
    if group is not None:
        # tansu 0.6 answers the second JoinGroup (after MEMBER_ID_REQUIRED) only after about half
        # the session timeout: with kafka-python's default 45 s that is ~22 s before any message.
        conf.update(group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    conf.update(extra or {})
    consumer = KafkaConsumer(**conf)
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while not checker.done() and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500, max_records=1000)
            for tp, records in batches.items():
                for r in records:
                    checker.add(tp.partition, r.key, r.value, r.headers)
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(*assigned)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            consumer.poll(timeout_ms=100)
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# A raw single-connection Kafka client (kafka-python's protocol encoders, no client logic)


class RawKafka:
    """One TCP connection to one address; requests encoded and responses decoded with kafka-python's
    protocol classes (`kafka.protocol.*`), nothing else: no bootstrap, no metadata-driven
    reconnects, no version negotiation. So it talks to exactly the address it is given, which is
    what checking "what is physically on the broker" needs: tansu advertises Envoy's listener, and
    every real client would follow that advertisement back through Envoy.

    Also used through Envoy, to send a request a real client would not send (an API the filter
    refuses, whatever the ApiVersions answer said).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", client_id: str | None = "e2e-raw",
                 timeout: float = 15.0, tls: "ClientTls | None" = None):
        import socket
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            import ssl
            ctx = ssl.create_default_context(cafile=tls.ca)
            ctx.check_hostname = False
            if tls.cert:
                ctx.load_cert_chain(tls.cert, tls.key)
            self.sock = ctx.wrap_socket(self.sock)
        self.client_id = client_id
        self._corr = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawKafka":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def encode(self, request: Any, version: int) -> tuple[int, bytes]:
        """(correlation id, the framed request bytes)."""
        self._corr += 1
        request.with_header(correlation_id=self._corr, client_id=self.client_id)
        return self._corr, bytes(request.encode(version=version, header=True, framed=True))

    def recv_frame(self) -> bytes:
        size = int.from_bytes(self._recv(4), "big", signed=True)
        return self._recv(size)

    def call(self, request: Any, version: int) -> Any:
        """Send one request and decode its response (same API, same version)."""
        corr, data = self.encode(request, version)
        self.sock.sendall(data)
        payload = self.recv_frame()
        response_cls = response_class(request)
        response = response_cls.decode(payload, version=version, header=True)
        got = response.header.correlation_id
        if got != corr:
            raise AssertionError(f"response correlation id {got}, expected {corr}")
        return response


def metadata_partitions(raw: RawKafka, topic: str, version: int = 4) -> dict[str, int]:
    """{topic: partition count} a Metadata request for one topic (no auto-creation) returns on a
    RawKafka connection (errors left out)."""
    from kafka.protocol.metadata import MetadataRequest
    req = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                          allow_auto_topic_creation=False)
    md = raw.call(req, version)
    return {t.name: len(t.partitions) for t in md.topics if t.error_code == 0}


def closed_without_answer(port: int, client_id: str, tls: "ClientTls | None" = None) -> bool:
    """A new connection to `port` gets no answer to a Metadata request: it is closed (or reset)."""
    try:
        with RawKafka(port, client_id=client_id, tls=tls, timeout=10) as raw:
            metadata_partitions(raw, "any-topic")
    except (ConnectionError, OSError):
        return True
    return False


def response_class(request: Any) -> Any:
    """The kafka-python response class of a request instance (XRequest -> XResponse)."""
    module = sys.modules[type(request).__module__]
    name = type(request).__name__.split("_v")[0]
    return getattr(module, name[: -len("Request")] + "Response")


@dataclass
class RawRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    control: bool = False        # a transaction marker (key: version, type 0 = abort, 1 = commit)
    transactional: bool = False

    @property
    def marker(self) -> str | None:
        if not self.control or not self.key or len(self.key) < 4:
            return None
        return {0: "abort", 1: "commit"}.get(int.from_bytes(self.key[2:4], "big"), "?")


class BrokerView(RawKafka):
    """What is physically on the broker, read over one direct connection (never through Envoy).

    Each helper uses one fixed, old-enough API version that tansu 0.6 and kafka-python both speak.
    """

    def node_ids(self) -> list[int]:
        """The broker ids the broker's Metadata (v4) lists."""
        from kafka.protocol.metadata import MetadataRequest
        md = self.call(MetadataRequest(topics=[], allow_auto_topic_creation=False), 4)
        return [b.node_id for b in md.brokers]

    def topics(self) -> dict[str, int]:
        """{topic: partition count} of every topic on the broker (Metadata v4, no auto-creation)."""
        from kafka.protocol.metadata import MetadataRequest
        md = self.call(MetadataRequest(topics=None, allow_auto_topic_creation=False), 4)
        return {t.name: len(t.partitions) for t in md.topics if t.error_code == 0}

    def _fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> Any:
        from kafka.protocol.consumer import FetchRequest
        T = FetchRequest.FetchTopic
        # tansu 0.6 answers max_wait_ms=0 with no partitions at all: wait a little.
        req = FetchRequest(replica_id=-1, max_wait_ms=20, min_bytes=1, max_bytes=max_bytes, isolation_level=0,
                           topics=[T(topic=topic, partitions=[T.FetchPartition(
                               partition=partition, fetch_offset=offset, partition_max_bytes=max_bytes)])])
        resp = self.call(req, 4)
        for t in resp.responses:
            for p in t.partitions:
                if p.partition_index == partition:
                    if p.error_code != 0:
                        raise AssertionError(f"Fetch {topic}/{partition}@{offset}: error {p.error_code}")
                    return p
        raise AssertionError(f"Fetch {topic}/{partition}: partition missing from the response")

    def end_offsets(self, topic: str, partitions: int | Iterable[int]) -> dict[int, int]:
        """{partition: high watermark}, from Fetch (v4): tansu 0.6 answers ListOffsets(latest)
        with the last batch's base offset + 1, which is short when the last batch holds more than
        one record."""
        parts = range(partitions) if isinstance(partitions, int) else list(partitions)
        return {p: self._fetch(topic, p, 0, 1).high_watermark for p in parts}

    def fetch_partition(self, topic: str, partition: int, offset: int = 0, max_bytes: int = 16 * MIB) -> list[RawRecord]:
        """Every record of one partition from `offset` to the high watermark (Fetch v4, repeated)."""
        from kafka.record import MemoryRecords
        out: list[RawRecord] = []
        nxt = offset
        while True:
            p = self._fetch(topic, partition, nxt, max_bytes)
            if nxt >= p.high_watermark:
                return out
            records = MemoryRecords(bytes(p.records or b""))
            got_any = False
            while True:
                batch = records.next_batch()
                if batch is None:
                    break
                control = bool(getattr(batch, "is_control_batch", False))
                transactional = bool(getattr(batch, "is_transactional", False))
                for r in batch:
                    if r.offset < nxt:
                        continue
                    out.append(RawRecord(partition, r.offset, r.key, r.value, list(r.headers), control, transactional))
                    nxt = r.offset + 1
                    got_any = True
            if not got_any:
                raise AssertionError(f"Fetch {topic}/{partition}@{nxt}: no records below the high watermark "
                                     f"{p.high_watermark}")

    def fetch_all(self, topic: str) -> list[RawRecord]:
        """Every record of every partition of a topic, by partition then offset."""
        partitions = self.topics().get(topic)
        if partitions is None:
            raise AssertionError(f"topic {topic} is not on the broker (has {sorted(self.topics())})")
        out: list[RawRecord] = []
        for p in range(partitions):
            out.extend(self.fetch_partition(topic, p))
        return out

    def values(self, topic: str) -> list[bytes]:
        """The values of a topic's data records (transaction markers left out)."""
        return [r.value for r in self.fetch_all(topic) if not r.control]

    def markers(self, topic: str) -> list[str]:
        """The transaction markers of a topic, in partition and offset order ("commit"/"abort")."""
        return [r.marker for r in self.fetch_all(topic) if r.control]

    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """CreateTopics v2 (and wait until Metadata shows the partitions)."""
        from kafka.protocol.admin import CreateTopicsRequest
        T = CreateTopicsRequest.CreatableTopic
        req = CreateTopicsRequest(topics=[T(name=topic, num_partitions=partitions, replication_factor=1,
                                            assignments=[], configs=[
                                                T.CreatableTopicConfig(name=k, value=v)
                                                for k, v in (config or {}).items()])],
                                  timeout_ms=10000, validate_only=False)
        resp = self.call(req, 2)
        for t in resp.topics:
            if t.error_code != 0:
                raise AssertionError(f"CreateTopics {topic}: error {t.error_code} {t.error_message}")
        _wait(lambda: self.topics().get(topic) == partitions, 15, f"topic {topic} on the broker")

    def groups(self) -> set[str]:
        """Consumer groups the broker knows (ListGroups v1)."""
        from kafka.protocol.admin import ListGroupsRequest
        resp = self.call(ListGroupsRequest(), 1)
        if resp.error_code != 0:
            raise AssertionError(f"ListGroups: error {resp.error_code}")
        return {g.group_id for g in resp.groups}

    def committed(self, group: str, topic: str, partitions: int | Iterable[int]) -> dict[int, int]:
        """{partition: committed offset} of a group (OffsetFetch v1; -1 when none)."""
        from kafka.protocol.consumer import OffsetFetchRequest
        parts = range(partitions) if isinstance(partitions, int) else list(partitions)
        T = OffsetFetchRequest.OffsetFetchRequestTopic
        resp = self.call(OffsetFetchRequest(group_id=group, topics=[T(name=topic, partition_indexes=list(parts))]), 1)
        out = {}
        for t in resp.topics:
            for p in t.partitions:
                out[p.partition_index] = p.committed_offset
        return out

    def topic_configs(self, topic: str) -> dict[str, str]:
        """A topic's configuration entries (DescribeConfigs v1)."""
        from kafka.protocol.admin import DescribeConfigsRequest
        R = DescribeConfigsRequest.DescribeConfigsResource
        resp = self.call(DescribeConfigsRequest(resources=[R(resource_type=2, resource_name=topic,
                                                             configuration_keys=None)]), 1)
        out = {}
        for res in resp.results:
            if res.error_code != 0:
                raise AssertionError(f"DescribeConfigs {topic}: error {res.error_code} {res.error_message}")
            for c in res.configs:
                out[c.name] = c.value
        return out


def wait_broker(pred: Callable[[], Any], timeout: float = 15.0, what: str = "the broker") -> Any:
    """Poll a check on the broker (BrokerView reads are cheap) until it holds."""
    return _wait(pred, timeout, what, interval=0.1)


# --------------------------------------------------------------------------------------------
# One set of operations, two client libraries (for tests parametrized over clients)


@dataclass
class Delivered:
    topic: str          # the topic name the client library reported
    partition: int
    offset: int
    value: bytes


def _poll_into(consumer, got: list, errors: list[str], deadline: float,
               enough: Callable[[], bool] = lambda: False) -> None:
    """Poll a librdkafka consumer until `deadline` (or until enough()), appending messages to
    `got` and error events to `errors`."""
    while time.monotonic() < deadline and not enough():
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            errors.append(str(msg.error()))
            continue
        got.append(Consumed(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()))


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class ClientTls:
    """A client certificate and the CA that signed the server's, for mTLS to Envoy."""
    ca: str
    cert: str
    key: str


class ClientOps:
    """The operations the name-conversion tests need, with one client library and one client id.

    Every call makes its own client (producer, consumer, admin) with `client_id` and closes it.
    """

    name = "?"

    def __init__(self, bootstrap: str, client_id: str, tls: "ClientTls | None" = None):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.tls = tls

    def __repr__(self) -> str:
        return f"{self.name}({self.client_id})"


class RdkafkaOps(ClientOps):
    name = "rdkafka"

    def conf(self, **extra: Any) -> dict:
        tls = {} if self.tls is None else {"security.protocol": "ssl", "ssl.ca.location": self.tls.ca}
        if self.tls is not None and self.tls.cert:
            tls.update({"ssl.certificate.location": self.tls.cert, "ssl.key.location": self.tls.key})
        return {**rdkafka_common(self.bootstrap), "client.id": self.client_id, **tls, **extra}

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient
        return AdminClient(self.conf())

    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None,
                     timeout: float = 30.0) -> None:
        from confluent_kafka.admin import NewTopic
        admin = self._admin()
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                                config=dict(config or {}))],
                                      operation_timeout=timeout, request_timeout=timeout)
        for f in futures.values():
            f.result(timeout)

        def visible() -> bool:
            t = admin.list_topics(topic, timeout=5).topics.get(topic)
            return t is not None and t.error is None and len(t.partitions) == partitions
        _wait(visible, timeout, f"topic {topic} in metadata ({self})")

    def produce(self, topic: str, values: list[bytes], partition: int | None = None,
                timeout: float = 30.0) -> list[Delivered]:
        return self.produce_to([(topic, v) for v in values], partition, timeout)

    def produce_to(self, messages: list[tuple[str, bytes]], partition: int | None = None,
                   timeout: float = 30.0, linger_ms: int = 5) -> list[Delivered]:
        """Produce (topic, value) pairs with one producer (so one Produce request may carry several
        topics); the delivery reports sorted by topic, partition and offset."""
        from confluent_kafka import Producer
        producer = Producer(self.conf(**{"enable.idempotence": True, "acks": "all", "linger.ms": linger_ms}))
        out: list[Delivered] = []
        errors: list[str] = []

        def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
            if err is not None:
                errors.append(str(err))
            else:
                out.append(Delivered(msg.topic(), msg.partition(), msg.offset(), msg.value()))

        for topic, v in messages:
            kw = {} if partition is None else {"partition": partition}
            producer.produce(topic, value=v, key=v, on_delivery=on_delivery, **kw)
        remaining = producer.flush(timeout)
        producer.close()
        if remaining or errors:
            raise AssertionError(f"{self}: {remaining} undelivered, errors {errors[:5]}")
        return sorted(out, key=lambda d: (d.topic, d.partition, d.offset))

    def list_topics(self) -> dict[str, int]:
        md = self._admin().list_topics(timeout=10)
        return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}

    def list_groups(self) -> set[str]:
        admin = self._admin()   # kept referenced until the result is in (destroying it fails the request)
        result = admin.list_consumer_groups(request_timeout=10).result(15)
        if result.errors:
            raise AssertionError(f"{self}: list_consumer_groups errors {result.errors}")
        return {g.group_id for g in result.valid}

    def _consumer(self, group: str, **extra: Any) -> Any:
        from confluent_kafka import Consumer
        return Consumer(self.conf(**{
            "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
            # tansu completes a JoinGroup only after about half the session timeout.
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100,
            **extra}))

    def consume(self, topic: str, group: str, count: int, commit: bool = True,
                timeout: float = 40.0) -> tuple[list[Consumed], dict[tuple[str, int], int]]:
        """Subscribe with a consumer group, take exactly `count` messages, commit them (synchronously)
        and read the group's committed offsets back. Returns (messages, {(topic, partition): committed})."""
        from confluent_kafka import TopicPartition
        consumer = self._consumer(group)
        got: list[Consumed] = []
        errors: list[str] = []
        try:
            consumer.subscribe([topic])
            _poll_into(consumer, got, errors, time.monotonic() + timeout, lambda: len(got) >= count)
            if len(got) < count:
                raise AssertionError(f"{self}: {len(got)} of {count} messages from {topic} in {timeout}s "
                                     f"(errors {errors[:5]})")
            committed: dict[tuple[str, int], int] = {}
            if commit:
                consumer.commit(asynchronous=False)
                parts = sorted({(m.topic, m.partition) for m in got})
                for tp in consumer.committed([TopicPartition(t, p) for t, p in parts], timeout=10):
                    if tp.error is not None:
                        raise AssertionError(f"{self}: committed() error {tp.error}")
                    committed[(tp.topic, tp.partition)] = tp.offset
        finally:
            consumer.close()
        return got, committed

    def committed(self, group: str, topic: str, partitions: int) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition
        consumer = self._consumer(group)
        try:
            tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {(tp.topic, tp.partition): tp.offset for tp in tps}
        finally:
            consumer.close()

    def commit_offsets(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Commit offsets for a group without joining it (a standalone commit)."""
        from confluent_kafka import TopicPartition
        consumer = self._consumer(group)
        try:
            result = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                                     asynchronous=False)
            bad = [tp for tp in result or [] if tp.error is not None]
            if bad:
                raise AssertionError(f"{self}: commit errors {bad}")
        finally:
            consumer.close()

    def fetch_assigned(self, topic: str, partitions: int, seconds: float = 3.0) -> tuple[list[Consumed], list[str]]:
        """Read a topic by assignment (no group) from the beginning for `seconds`: (messages, errors)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        consumer = self._consumer(f"{self.client_id}-unused")
        got: list[Consumed] = []
        errors: list[str] = []
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
            _poll_into(consumer, got, errors, time.monotonic() + seconds)
        finally:
            consumer.close()
        return got, errors

    def describe_configs(self, topic: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource
        admin = self._admin()
        futures = admin.describe_configs([ConfigResource("topic", topic)], request_timeout=10)
        out = {}
        for f in futures.values():
            for name, entry in f.result(15).items():
                out[name] = entry.value
        return out

    def transactional_producer(self, transactional_id: str) -> RdkafkaTxnProducer:
        return RdkafkaTxnProducer(self, transactional_id)

    def alter_topic_config(self, topic: str, key: str, value: str) -> None:
        """IncrementalAlterConfigs SET (an API the filter does not rewrite)."""
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
        res = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        admin = self._admin()
        for f in admin.incremental_alter_configs([res], request_timeout=10).values():
            f.result(15)


class RdkafkaTxnProducer:
    """A transactional librdkafka producer, driven step by step."""

    def __init__(self, ops: "RdkafkaOps", transactional_id: str):
        from confluent_kafka import Producer
        self.producer = Producer(ops.conf(**{"transactional.id": transactional_id, "acks": "all",
                                             "transaction.timeout.ms": 30000}))

    def init(self) -> None:
        self.producer.init_transactions(30)

    def send(self, topic: str, values: list[bytes], partition: int = 0) -> None:
        """Begin a transaction and produce into it (flushed, not committed)."""
        self.producer.begin_transaction()
        for v in values:
            self.producer.produce(topic, value=v, key=v, partition=partition)
        if self.producer.flush(30):
            raise AssertionError("transactional messages still undelivered after flush")

    def commit(self) -> None:
        self.producer.commit_transaction(30)

    def close(self) -> None:
        self.producer.flush(5)
        self.producer.close()


class KafkaPythonTxnProducer:
    """A transactional kafka-python producer, driven step by step."""

    def __init__(self, ops: "KafkaPythonOps", transactional_id: str):
        from kafka import KafkaProducer
        self.producer = KafkaProducer(**ops.conf(transactional_id=transactional_id, enable_idempotence=True,
                                                 acks="all"))

    def init(self) -> None:
        self.producer.init_transactions()

    def send(self, topic: str, values: list[bytes], partition: int = 0) -> None:
        self.producer.begin_transaction()
        for v in values:
            self.producer.send(topic, value=v, key=v, partition=partition)
        self.producer.flush(timeout=30)

    def commit(self) -> None:
        self.producer.commit_transaction()

    def close(self) -> None:
        self.producer.close(timeout=10)


def _release_clients_on_error(cls: type) -> type:
    """Wrap the public methods of a ClientOps class so that an exception leaves no client alive.

    A librdkafka client (AdminClient, Producer, Consumer) is destroyed when its last reference goes;
    an exception's traceback keeps the frames that refer to it, and pytest keeps the tracebacks of
    failed tests, so the clients of a failed test would go on reconnecting (and logging) for the rest
    of the session. The wrapper re-raises a new exception with the same type name and message
    outside the `except` block, after the original traceback (and with it those frames) is gone.
    """
    def wrap(f: Callable) -> Callable:
        def method(*args: Any, **kwargs: Any) -> Any:
            failure = None
            try:
                return f(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - re-raised below without its traceback
                failure = (type(e), f"{type(e).__name__}: {e}")
            kind, message = failure
            raise (kind if issubclass(kind, AssertionError) else ClientError)(message)
        method.__name__ = f.__name__
        method.__doc__ = f.__doc__
        return method

    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_") and name not in ("conf", "transactional_producer"):
            setattr(cls, name, wrap(value))
    return cls


class ClientError(Exception):
    """A client library call failed (message: the original exception's type and message)."""


RdkafkaOps = _release_clients_on_error(RdkafkaOps)


class KafkaPythonOps(ClientOps):
    name = "kafka-python"

    def conf(self, **extra: Any) -> dict:
        tls = {} if self.tls is None else {
            "security_protocol": "SSL", "ssl_cafile": self.tls.ca, "ssl_certfile": self.tls.cert,
            "ssl_keyfile": self.tls.key}
        return {**kafka_python_common(self.bootstrap), "client_id": self.client_id, **tls, **extra}

    def _admin(self) -> Any:
        from kafka import KafkaAdminClient
        return KafkaAdminClient(**self.conf())

    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None,
                     timeout: float = 30.0) -> None:
        admin = self._admin()
        try:
            admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                         "configs": dict(config or {})}})

            def visible() -> bool:
                for t in admin.describe_topics([topic]):
                    if t["name"] == topic and t["error_code"] == 0 and len(t["partitions"]) == partitions:
                        return True
                return False
            _wait(visible, timeout, f"topic {topic} in metadata ({self})")
        finally:
            admin.close()

    def produce(self, topic: str, values: list[bytes], partition: int | None = None,
                timeout: float = 30.0) -> list[Delivered]:
        return self.produce_to([(topic, v) for v in values], partition, timeout)

    def produce_to(self, messages: list[tuple[str, bytes]], partition: int | None = None,
                   timeout: float = 30.0, linger_ms: int = 5) -> list[Delivered]:
        from kafka import KafkaProducer
        producer = KafkaProducer(**self.conf(acks="all", enable_idempotence=True, linger_ms=linger_ms))
        try:
            futures = [(v, producer.send(topic, value=v, key=v, partition=partition)) for topic, v in messages]
            producer.flush(timeout=timeout)
            out = []
            for v, f in futures:
                md = f.get(timeout=1)
                out.append(Delivered(md.topic, md.partition, md.offset, v))
        finally:
            producer.close(timeout=10)
        return sorted(out, key=lambda d: (d.topic, d.partition, d.offset))

    def list_topics(self) -> dict[str, int]:
        admin = self._admin()
        try:
            return {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if t["error_code"] == 0}
        finally:
            admin.close()

    def list_groups(self) -> set[str]:
        admin = self._admin()
        try:
            return {g["group_id"] for g in admin.list_groups()}
        finally:
            admin.close()

    def _consumer(self, group: str | None, **extra: Any) -> Any:
        from kafka import KafkaConsumer
        conf = self.conf(auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100, **extra)
        if group is not None:
            # tansu answers the JoinGroup after MEMBER_ID_REQUIRED only after ~half the session timeout.
            conf.update(group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=1000)
        return KafkaConsumer(**conf)

    def consume(self, topic: str, group: str, count: int, commit: bool = True,
                timeout: float = 40.0) -> tuple[list[Consumed], dict[tuple[str, int], int]]:
        consumer = self._consumer(group)
        got: list[Consumed] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=200, max_records=count - len(got)).items():
                    for r in records:
                        got.append(Consumed(r.topic, r.partition, r.offset, r.key, r.value))
            if len(got) < count:
                raise AssertionError(f"{self}: {len(got)} of {count} messages from {topic} in {timeout}s")
            committed: dict[tuple[str, int], int] = {}
            if commit:
                consumer.commit()
                from kafka import TopicPartition
                for t, p in sorted({(m.topic, m.partition) for m in got}):
                    committed[(t, p)] = consumer.committed(TopicPartition(t, p))
        finally:
            consumer.close(autocommit=False)
        return got, committed

    def committed(self, group: str, topic: str, partitions: int) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition
        consumer = self._consumer(group)
        try:
            return {(topic, p): consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
        finally:
            consumer.close(autocommit=False)

    def commit_offsets(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata
        consumer = self._consumer(group)
        try:
            tps = [TopicPartition(topic, p) for p in offsets]
            consumer.assign(tps)
            consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
        finally:
            consumer.close(autocommit=False)

    def fetch_assigned(self, topic: str, partitions: int, seconds: float = 3.0) -> tuple[list[Consumed], list[str]]:
        from kafka import TopicPartition
        consumer = self._consumer(None)
        got: list[Consumed] = []
        errors: list[str] = []
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            consumer.seek_to_beginning()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    batches = consumer.poll(timeout_ms=200)
                except Exception as e:  # noqa: BLE001 - an error is an acceptable outcome, recorded
                    errors.append(repr(e))
                    time.sleep(0.2)
                    continue
                for tp, records in batches.items():
                    for r in records:
                        got.append(Consumed(r.topic, r.partition, r.offset, r.key, r.value))
        finally:
            consumer.close(autocommit=False)
        return got, errors

    def describe_configs(self, topic: str) -> dict[str, str]:
        from kafka.admin import ConfigResource, ConfigResourceType
        admin = self._admin()
        try:
            # tansu reports topic configs as config_source DEFAULT_CONFIG: "modified" would hide them.
            result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        finally:
            admin.close()
        out = {}
        for _rtype, by_name in result.items():
            for _name, configs in by_name.items():
                for key, data in configs.items():
                    out[key] = data.get("value") if isinstance(data, dict) else data
        return out

    def transactional_producer(self, transactional_id: str) -> KafkaPythonTxnProducer:
        return KafkaPythonTxnProducer(self, transactional_id)

    def alter_topic_config(self, topic: str, key: str, value: str) -> None:
        """alter_configs: IncrementalAlterConfigs if advertised, else AlterConfigs."""
        from kafka.admin import ConfigResource, ConfigResourceType
        admin = self._admin()
        try:
            result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={key: value})])
        finally:
            admin.close()
        _ = result


CLIENT_OPS: dict[str, type[ClientOps]] = {"rdkafka": RdkafkaOps, "kafka-python": KafkaPythonOps}
