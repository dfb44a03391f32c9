"""Which brokers a client connects to, seen from three sides: the client library's own view
(librdkafka's statistics, kafka-python's cluster metadata), this process's sockets beneath the
libraries (/proc), and Envoy's connection counters. Used by the broker address tests and
examples/brokers.py."""

from __future__ import annotations

import json
import os
import threading
import time

from clients import CLIENT_OPS, rdkafka_common
from harness import Envoy


class DirectConnections:
    """While open, samples this process's TCP sockets every 10 ms and records those connected to
    `port` (the broker's own): (local port, remote port) pairs. The clients under test run in
    this process (librdkafka's threads, kafka-python), so a connection of theirs that bypassed
    Envoy shows up here whatever the library reports."""

    def __init__(self, port: int):
        self.port = port
        self.seen: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _socket_inodes(self) -> set[str]:
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        return inodes

    def _sample(self) -> None:
        inodes = self._socket_inodes()
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            try:
                lines = open(table).read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                local, remote, inode = f[1], f[2], f[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == self.port:
                    self.seen.add((int(local.rsplit(":", 1)[1], 16), self.port))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.01)

    def __enter__(self) -> "DirectConnections":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def envoy_connections(envoy: Envoy) -> tuple[float, float]:
    """(connections the Kafka listener accepted, connections Envoy opened to the broker)."""
    s = envoy.stats()
    return (s.get(f"listener.127.0.0.1_{envoy.listener_port}.downstream_cx_total"),
            s.get("cluster.kafka_broker.upstream_cx_total"))


def rdkafka_brokers(bootstrap: str, topic: str) -> set[str]:
    """The broker handles (host:port/id) librdkafka had while producing to and consuming from
    `topic` with a group, from its statistics."""
    from confluent_kafka import Consumer, Producer
    seen: set[str] = set()

    def on_stats(doc: str) -> None:
        for name, b in json.loads(doc).get("brokers", {}).items():
            if b.get("nodeid", -1) >= 0 and b.get("state") == "UP":
                seen.add(name)

    conf = {**rdkafka_common(bootstrap), "statistics.interval.ms": 100, "stats_cb": on_stats}
    p = Producer({**conf, "client.id": "addr-producer"})
    for i in range(20):
        p.produce(topic, value=f"v{i}".encode())
    assert p.flush(20) == 0
    for _ in range(5):
        p.poll(0.1)
    c = Consumer({**conf, "client.id": "addr-consumer", "group.id": f"{topic}-group",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    got, deadline = 0, time.monotonic() + 30
    while got < 20 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got += 1
    c.commit(asynchronous=False)
    for _ in range(5):
        c.poll(0.1)
    c.close()
    assert got == 20, got
    return seen


def kafka_python_brokers(bootstrap: str, topic: str) -> set[str]:
    """The brokers (host:port/id) kafka-python knew after producing to and consuming from `topic`
    with a group, from its cluster metadata."""
    from kafka import KafkaAdminClient
    ops = CLIENT_OPS["kafka-python"](bootstrap, "addr-kp")
    ops.produce(topic, [b"a", b"b"])
    got, committed = ops.consume(topic, f"{topic}-group", 2)
    assert len(got) == 2 and committed, (got, committed)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="addr-kp-admin")
    try:
        admin.describe_topics([topic])
        return {f"{b.host}:{b.port}/{b.node_id}" for b in admin._client.cluster.brokers()}
    finally:
        admin.close()


# The brokers a client library used, by CLIENT_OPS name.
BROKERS_USED = {"rdkafka": rdkafka_brokers, "kafka-python": kafka_python_brokers}
