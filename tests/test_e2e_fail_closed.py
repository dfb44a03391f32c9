"""Fail closed under a rule, and bounded holding, with the real Envoy and the built filter.

A connection that a name-conversion rule applies to is never degraded to unmapped
pass-through: a frame it cannot frame, or a response that answers nothing it knows, closes the
connection. What the filter must hold whole is bounded per frame (max_held_frame_bytes) and per
VM (max_held_bytes): past either it answers with a Kafka error, and it never collects a frame to
refuse it. One hostile client cannot take the filter down for the others on the worker.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest

from clients import rdkafka_common
from harness import RecordingServer, delta, request_frame, wait_stable, wait_until
from test_e2e_wire import Reader, close, compact_string, connect, i16, i32, oversized_header, respond

TENANT_RULE = {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}},
               "topics": {"prefix": "team-a."}}
RULED = "team-a-wire"


def kstring(s: str) -> bytes:
    return i16(len(s)) + s.encode()


def metadata_v4(corr: int, client: str, topics: list[str]) -> bytes:
    body = i32(len(topics)) + b"".join(kstring(t) for t in topics) + b"\x00"  # no auto-creation
    return request_frame(3, 4, corr, client, body)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def bystander_produces(bootstrap: str, count: int = 100) -> list:
    """A well-behaved librdkafka producer under no rule sends `count` messages; returns each
    delivery report's error (None when delivered)."""
    from confluent_kafka import Producer

    delivered: list = []
    producer = Producer({**rdkafka_common(bootstrap), "client.id": "bystander", "acks": "all",
                         "linger.ms": 5})
    for i in range(count):
        producer.produce("bystander-topic", value=b"m%d" % i,
                         on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0)
    assert producer.flush(60) == 0
    return delivered


def closed_stats(envoy, before):
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="the connection to close")
    return delta(envoy.settled_kafka_stats(), before)


@pytest.mark.parametrize("bad", [
    oversized_header(0x7FFFFFFF) + bytes(100),
    b"\xff\xff\xff\xfd" + bytes(20),                       # a negative size
    request_frame(0, 3, 9, RULED, bytes(5000)),              # over max_frame_bytes 4096
], ids=["size-0x7fffffff", "negative-size", "over-max_frame_bytes"])
def test_a_bad_frame_under_a_rule_closes_the_connection(make_envoy, bad):
    with RecordingServer(respond=respond) as server:
        envoy = make_envoy(server.port, plugin_config={"max_frame_bytes": 4096, "rules": [TENANT_RULE]})
        before = envoy.kafka_stats()
        good = request_frame(18, 3, 1, RULED, compact_string("x") + compact_string("1") + b"\x00",
                             flexible=True)
        sock = connect(envoy)
        try:
            reader = Reader(sock)
            sock.sendall(good)
            reader.read_at_least(4)
            sock.sendall(bad)
            reader.wait_closed(timeout=20)
        finally:
            close(sock)
        d = closed_stats(envoy, before)
        # Nothing of the bad frame reached the broker.
        assert server.received(0) == good
    assert d.get("kafka.connections_closed_by_policy") == 1, d
    assert not d.get("kafka.connections_bypassed"), d


def test_an_unmatched_response_closes_a_connection_with_stages(make_envoy):
    """With rules configured, every response is handled as its request's, whether or not the
    client is under a rule: one that answers nothing in flight closes the connection, for the
    client under the rule and for a bystander alike; a connection only observed passes it (see
    README, "Correlation integrity")."""
    def wrong_correlation(frame: bytes) -> bytes:
        corr = int.from_bytes(frame[4:8], "big") + 1000
        payload = i32(corr) + bytes(30)
        return i32(len(payload)) + payload

    with RecordingServer(respond=wrong_correlation) as server:
        ruled = make_envoy(server.port, plugin_config={"rules": [TENANT_RULE]})
        observed = make_envoy(server.port, plugin_config={"client_metrics": {}})
        for envoy, client, closes in [(ruled, RULED, True), (ruled, "bystander", True),
                                      (observed, "bystander", False)]:
            before = envoy.kafka_stats()
            sock = connect(envoy)
            try:
                reader = Reader(sock)
                sock.sendall(metadata_v4(1, client, ["events"]))
                if closes:
                    assert reader.wait_closed(timeout=20) == b""
                else:
                    # Only observed: forwarded as it came, the client decides what to make of it.
                    assert len(reader.read_at_least(38)) == 38
            finally:
                close(sock)
            d = closed_stats(envoy, before)
            assert d.get("kafka.responses_unmatched") == 1, (client, d)
            assert bool(d.get("kafka.connections_closed_by_policy")) == closes, (client, d)


def test_a_100_mb_hostile_frame_is_refused_and_other_clients_carry_on(make_stack):
    """The issue's reproduction: a Metadata v1 request under a prefix rule whose topic array
    claims 0x7ffffff0 entries, followed by 100 MB of 10-byte names. Before: the VM aborted and the
    worker refused every later connection. Now: refused as it streams, a few KiB in the VM."""
    stack = make_stack("filter", plugin_config={"rules": [TENANT_RULE]})
    envoy = stack.envoy
    before = envoy.kafka_stats()
    rss_before = rss_kib(envoy.process.pid)
    total = 100_000_000
    header = i16(3) + i16(1) + i32(1) + kstring("team-a-hostile")
    head = i32(len(header) + 4 + total) + header + struct.pack(">i", 0x7FFFFFF0)
    names = (kstring("topic-xy") * (1 << 16))[: 1 << 20]
    sock = connect(envoy)
    reader = Reader(sock)

    def send() -> None:
        sock.sendall(head)
        sent = 0
        while sent < total:
            n = min(len(names), total - sent)
            sock.sendall(names[:n])
            sent += n

    sender = threading.Thread(target=send)
    sender.start()
    # A well-behaved producer under no rule, on the same Envoy, at the same time.
    delivered = bystander_produces(stack.bootstrap)
    sender.join(120)
    try:
        # The hostile client gets the filter's answer for correlation id 1: an (empty) Metadata
        # v1 response, the frame itself never reached the broker.
        got = reader.read_at_least(8, timeout=30)
        assert got[4:8] == i32(1), got[:16]
    finally:
        close(sock)
    assert delivered == [None] * 100, delivered
    # The producer's connections stay open: the counters, not the gauge, are what settles.
    d = delta(envoy.settled_kafka_stats(), before)
    assert d.get("kafka.held.frames_too_large") == 1, d
    assert envoy.poll() is None
    growth = rss_kib(envoy.process.pid) - rss_before
    assert growth < 64 * 1024, f"Envoy's RSS grew by {growth} KiB"
    assert "unreachable" not in envoy.log_text() and "panic" not in envoy.log_text()


def test_fifty_connections_holding_large_frames_stay_within_the_budget(make_stack):
    """50 connections under a rule each send a 256 KiB Metadata request (held whole to be
    rewritten), all but its last byte first, so that all of them want to be held at once. With
    max_held_bytes 1 MiB only a few fit; the others are answered with an error at once. Every
    client gets an answer, Envoy's memory stays bounded, and a producer under no rule on the same
    Envoy gets every message through."""
    stack = make_stack("filter", plugin_config={
        "rules": [TENANT_RULE], "max_held_frame_bytes": 512 * 1024, "max_held_bytes": 1024 * 1024})
    envoy = stack.envoy
    before = envoy.kafka_stats()
    rss_before = rss_kib(envoy.process.pid)
    topics = [f"t{i:06d}" for i in range(32_000)]
    frames = [metadata_v4(100 + i, f"team-a-c{i}", topics) for i in range(50)]
    assert 250_000 < len(frames[0]) < 300_000
    socks = [connect(envoy) for _ in frames]
    readers = [Reader(s) for s in socks]
    try:
        for s, f in zip(socks, frames):
            s.sendall(f[:-1])
        # Only once Envoy has read every partial frame may they complete (completing frees
        # budget): the refusals are counted at once, so wait for them to reach the bound, then stop.
        def refused_so_far() -> float:
            return delta(envoy.kafka_stats(), before).get("kafka.held.budget_exhausted", 0)

        wait_until(lambda: refused_so_far() >= 30, 30, what="30 connections refused a hold")
        wait_stable(refused_so_far, timeout=30, interval=0.3, settle=4, what="the refusals to stop")
        for s, f in zip(socks, frames):
            s.sendall(f[-1:])
        delivered = bystander_produces(stack.bootstrap)
        assert delivered == [None] * 100, delivered
        for i, r in enumerate(readers):
            got = r.read_at_least(8, timeout=60)
            assert got[4:8] == i32(100 + i), (i, got[:16])
    finally:
        for s in socks:
            close(s)
    d = delta(envoy.settled_kafka_stats(), before)
    refused = d.get("kafka.held.budget_exhausted", 0)
    assert 30 <= refused < 50, d
    assert envoy.poll() is None
    growth = rss_kib(envoy.process.pid) - rss_before
    assert growth < 128 * 1024, f"Envoy's RSS grew by {growth} KiB"
