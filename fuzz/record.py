#!/usr/bin/env python3
"""Record real Kafka client traffic and turn it into the fuzz targets' seed corpora.

A tansu broker (tests/harness.py `Broker`, advertising a relay's port so that clients come back
through it) sits behind a small TCP relay that records, per connection, every chunk in each
direction in the order it was relayed. librdkafka (confluent-kafka) and kafka-python then run
metadata, admin (create/list topics, list/describe groups), produce, consume with a group,
commit and fetch committed offsets, once as tenant `team-a-x` and once as `checkout-canary`.
Each connection becomes seeds in each target's input format (fuzz/src/scenario.rs):

  request_stream   [config][chunking] client bytes
  response_stream  [chunking][u16 len] client bytes, broker bytes
  prefix_rule      operations: frames in relayed order, each `[tag][u16 len] body`
  canary_rule      the same, from the canary client's connections

Usage (from the repository root, after `make py-deps`):  .venv/bin/python fuzz/record.py
Writes fuzz/corpus/<target>/seed-*, replacing the previous recorded seeds (other files stay).
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402

CORPUS = REPO / "fuzz" / "corpus"
# Keep the committed corpus small: every seed is capped, and so is each target's total.
MAX_SEED = 24 * 1024
MAX_TARGET = 120 * 1024


class Relay:
    """client <-> relay <-> broker; records each connection's chunks as (direction, bytes)."""

    def __init__(self, port: int, upstream: int):
        self.port = port
        self.upstream = upstream
        self.lock = threading.Lock()
        self.connections: list[list[tuple[str, bytes]]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((harness.HOST, port))
        self.sock.listen(64)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection((harness.HOST, self.upstream))
            except OSError:
                client.close()
                continue
            log: list[tuple[str, bytes]] = []
            with self.lock:
                self.connections.append(log)
            for src, dst, d in ((client, broker, "req"), (broker, client, "resp")):
                threading.Thread(target=self._pump, args=(src, dst, d, log), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str,
              log: list[tuple[str, bytes]]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    log.append((direction, data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Workloads


def rdkafka_session(bootstrap: str, client_id: str, topics: list[str], group: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "client.id": client_id}
    admin = AdminClient(common)
    fs = admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics],
                             operation_timeout=20, request_timeout=20)
    for f in fs.values():
        try:
            f.result(20)
        except Exception as e:  # already exists, etc.
            print(f"  create_topics: {e}")
    harness.wait_until(lambda: all(t in admin.list_topics(timeout=5).topics for t in topics), 20)
    try:
        admin.list_consumer_groups().result(10)
    except Exception as e:
        print(f"  admin: {e}")

    producer = Producer({**common, "linger.ms": 5})
    for i in range(12):
        producer.produce(topics[i % len(topics)], key=f"k{i}".encode(), value=f"value-{i}".encode() * 3,
                         headers=[("h", b"1")])
    producer.flush(20)

    # acks=0: no response.
    p0 = Producer({**common, "acks": 0})
    p0.produce(topics[0], value=b"fire-and-forget")
    p0.flush(10)

    consumer = Consumer({**common, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe(topics)
    got = 0
    deadline = time.time() + 25
    while got < 12 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    try:
        consumer.commit(asynchronous=False)
        consumer.committed([TopicPartition(topics[0], 0)], timeout=10)
    except Exception as e:
        print(f"  commit: {e}")
    consumer.close()
    try:
        admin.describe_consumer_groups([group]).get(group).result(10)
    except Exception as e:
        print(f"  describe groups: {e}")
    print(f"  rdkafka {client_id}: consumed {got}")


def kafka_python_session(bootstrap: str, client_id: str, topics: list[str], group: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    common = {"bootstrap_servers": bootstrap, "client_id": client_id, "request_timeout_ms": 20000}
    admin = KafkaAdminClient(**common)
    try:
        admin.create_topics([NewTopic(t + "-kp", 1, 1) for t in topics])
    except Exception as e:
        print(f"  kafka-python create_topics: {e}")
    from kafka.admin import ConfigResource, ConfigResourceType
    calls = {
        "list_topics": admin.list_topics,
        "describe_topics": lambda: admin.describe_topics(topics),
        "describe_cluster": admin.describe_cluster,
        "describe_configs": lambda: admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics[0])]),
        "describe_log_dirs": admin.describe_log_dirs,
        "list_partition_offsets": lambda: admin.list_partition_offsets(
            {TopicPartition(topics[0], 0): -1}),
    }
    for name, call in calls.items():
        try:
            call()
        except Exception as e:
            print(f"  kafka-python {name}: {e!r}"[:200])

    producer = KafkaProducer(**common, linger_ms=5)
    for i in range(8):
        producer.send(topics[i % len(topics)], key=f"k{i}".encode(), value=f"kp-{i}".encode())
    producer.flush(20)
    producer.close()

    # Group consumption does not deliver with tansu and kafka-python: assign, then commit.
    consumer = KafkaConsumer(**common, group_id=group + "-kp", enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    parts = [TopicPartition(t, p) for t in topics for p in (0, 1)]
    consumer.assign(parts)
    got = 0
    for _ in consumer:
        got += 1
        if got >= 8:
            break
    try:
        consumer.commit()
        consumer.committed(parts[0])
    except Exception as e:
        print(f"  kafka-python commit: {e}")
    consumer.close()
    calls = {
        "list_groups": admin.list_groups,
        "describe_groups": lambda: admin.describe_groups([group, group + "-kp"]),
        "list_group_offsets": lambda: admin.list_group_offsets(group + "-kp"),
        "delete_groups": lambda: admin.delete_groups([group + "-gone"]),
    }
    for name, call in calls.items():
        try:
            call()
        except Exception as e:
            print(f"  kafka-python {name}: {e!r}"[:200])
    admin.close()
    print(f"  kafka-python {client_id}: consumed {got}")


def rdkafka_transaction(bootstrap: str, client_id: str, topics: list[str], group: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                  "client.id": client_id, "transactional.id": "tx-" + group,
                  "transaction.timeout.ms": 10000})
    p.init_transactions(15)
    p.begin_transaction()
    for i in range(3):
        p.produce(topics[i % len(topics)], value=f"txn-{i}".encode())
    p.commit_transaction(15)
    print(f"  rdkafka {client_id}: transaction committed")


# --------------------------------------------------------------------------------------------
# Seeds


def frames_in_order(log: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Each direction's complete frames (size field stripped), in the order they completed."""
    bufs = {"req": b"", "resp": b""}
    out = []
    for d, data in log:
        bufs[d] += data
        while len(bufs[d]) >= 4:
            (n,) = struct.unpack(">i", bufs[d][:4])
            if n < 0 or len(bufs[d]) < 4 + n:
                break
            out.append((d, bufs[d][4:4 + n]))
            bufs[d] = bufs[d][4 + n:]
    return out


def cap_frames(frames: list[bytes], limit: int) -> bytes:
    """Whole frames (with size fields) up to about `limit` bytes."""
    out = b""
    for f in frames:
        framed = struct.pack(">i", len(f)) + f
        if out and len(out) + len(framed) > limit:
            break
        out += framed[: max(limit, 64)]
    return out


def rule_ops(frames: list[tuple[str, bytes]], chunking: int) -> bytes:
    out = b""
    for d, f in frames:
        f = f[:0xFFFF]
        if out and len(out) + len(f) + 3 > MAX_SEED:
            break
        op = 2 if d == "req" else 3
        out += bytes([(chunking << 3) | op]) + struct.pack(">H", len(f)) + f
    return out


def client_id_of(frame: bytes) -> str | None:
    if len(frame) < 10:
        return None
    (n,) = struct.unpack(">h", frame[8:10])
    return frame[10:10 + n].decode("utf-8", "replace") if n >= 0 else None


def write_seeds(target: str, seeds: list[bytes]) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    total = 0
    seen = set()
    for s in seeds:
        h = hashlib.sha1(s).hexdigest()[:16]
        if h in seen or not s:
            continue
        if total + len(s) > MAX_TARGET:
            continue
        seen.add(h)
        total += len(s)
        (d / f"seed-{h}").write_bytes(s)
    print(f"{target}: {len(seen)} seeds, {total} bytes")


def make_seeds(connections: list[list[tuple[str, bytes]]]) -> None:
    req_seeds, resp_seeds, prefix_seeds, canary_seeds = [], [], [], []
    # Different connections of one client often carry the same first frames: distinct ones first.
    by_shape = {}
    for log in connections:
        frames = frames_in_order(log)
        reqs = [f for d, f in frames if d == "req"]
        resps = [f for d, f in frames if d == "resp"]
        if not reqs:
            continue
        shape = tuple(f[:2] for f in reqs[:12])
        by_shape.setdefault(shape, []).append((frames, reqs, resps))
    for k, group in enumerate(by_shape.values()):
        for i, (frames, reqs, resps) in enumerate(group[:2]):
            chunking = (k + i) % 32
            client = cap_frames(reqs, MAX_SEED // 2)
            req_seeds.append(bytes([k % 4, chunking]) + client)
            cl = client[:0xFFFF]
            resp_seeds.append(bytes([chunking]) + struct.pack(">H", len(cl)) + cl
                              + cap_frames(resps, MAX_SEED // 2))
            cid = client_id_of(reqs[0]) or ""
            ops = rule_ops(frames, chunking if i else 0)
            if cid.startswith("team-a-"):
                prefix_seeds.append(ops)
            elif cid == "checkout-canary":
                canary_seeds.append(ops)
    write_seeds("request_stream", req_seeds)
    write_seeds("response_stream", resp_seeds)
    write_seeds("prefix_rule", prefix_seeds)
    write_seeds("canary_rule", canary_seeds)


def main() -> None:
    connections = []
    # One broker per client, so that each creates its topics afresh.
    for client_id, topics, group in (("team-a-x", ["orders", "events"], "g1"),
                                     ("checkout-canary", ["orders", "payments"], "g")):
        broker_port, relay_port = harness.free_ports(2)
        relay = Relay(relay_port, broker_port)
        broker = harness.Broker(port=broker_port, advertised_port=relay_port).start()
        bootstrap = f"{harness.HOST}:{relay_port}"
        print(f"recording {client_id}")
        try:
            for session in (rdkafka_session, kafka_python_session, rdkafka_transaction):
                try:
                    session(bootstrap, client_id, topics, group)
                except Exception as e:
                    print(f"  {session.__name__} failed: {e!r}"[:300])
        finally:
            time.sleep(1)
            relay.stop()
            broker.stop()
        with relay.lock:
            connections += [list(c) for c in relay.connections]
    print(f"{len(connections)} connections recorded")
    make_seeds(connections)


if __name__ == "__main__":
    main()
