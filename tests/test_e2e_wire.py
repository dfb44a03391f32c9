"""Wire-level pass-through: hand-built Kafka frames through the real Envoy + filter.

A tiny Python TCP server (harness.RecordingServer) is the cluster endpoint instead of a broker: it
records every byte it receives and answers each request frame (except acks=0 Produce) with a
deterministic response frame. The client is a raw socket. The filter must deliver exactly the
client's bytes to the server and exactly the server's bytes to the client, however the stream is
cut into TCP writes, and count what it saw.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from clients import UNKNOWN_API, _produce_acks, crate_api_name
from harness import RecordingServer, delta, parse_frames, per_api, request_frame, wait_closed, wait_until

CLIENT_ID = "e2e-wire"
MIB = 1024 * 1024


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def i16(v: int) -> bytes:
    return v.to_bytes(2, "big", signed=True)


def i32(v: int) -> bytes:
    return v.to_bytes(4, "big", signed=True)


@dataclass
class Frame:
    data: bytes
    api: str                 # the filter's metric label
    expects_response: bool
    unknown_api: bool = False
    unknown_version: bool = False


def api_versions_v3(corr: int) -> Frame:
    body = compact_string("e2e-wire-client") + compact_string("1.0") + b"\x00"
    return Frame(request_frame(18, 3, corr, CLIENT_ID, body, flexible=True), "ApiVersions", True)


def metadata_v1(corr: int) -> Frame:
    return Frame(request_frame(3, 1, corr, CLIENT_ID, i32(-1)), "Metadata", True)


def unknown_api(corr: int, body_len: int = 100, key: int = 10000) -> Frame:
    body = random.Random(corr).randbytes(body_len)
    return Frame(request_frame(key, 0, corr, CLIENT_ID, body), UNKNOWN_API, True, unknown_api=True)


def api_versions_v999(corr: int) -> Frame:
    return Frame(request_frame(18, 999, corr, CLIENT_ID, b"\x00\x01\x02\x03"), "ApiVersions", True,
                 unknown_version=True)


def produce_v3(corr: int, acks: int, records_len: int) -> Frame:
    records = random.Random(corr * 31 + acks).randbytes(records_len)
    body = (i16(-1) + i16(acks) + i32(30000) + i32(1) + i16(len("wire")) + b"wire"
            + i32(1) + i32(0) + i32(len(records)) + records)
    return Frame(request_frame(0, 3, corr, CLIENT_ID, body), "Produce", acks != 0)


def respond(frame: bytes) -> bytes | None:
    """The fake broker: a deterministic response per request, none for acks=0 Produce."""
    api_key = int.from_bytes(frame[0:2], "big", signed=True)
    corr = frame[4:8]
    if api_key == 0 and _produce_acks(frame) == 0:
        return None
    n = int.from_bytes(corr, "big")
    size = 2 * MIB + 3 if n == BIG_RESPONSE_CORR else 10 + (n * 37) % 300
    payload = corr + random.Random(n).randbytes(size)
    return len(payload).to_bytes(4, "big") + payload


BIG_RESPONSE_CORR = 77


def small_frames(base: int) -> list[Frame]:
    return [
        api_versions_v3(base + 1),
        metadata_v1(base + 2),
        unknown_api(base + 3),
        api_versions_v999(base + 4),
        produce_v3(base + 5, acks=1, records_len=500),
        produce_v3(base + 6, acks=0, records_len=200),
        metadata_v1(base + 7),
    ]


def big_frames(base: int) -> list[Frame]:
    return [
        api_versions_v3(base + 1),
        produce_v3(base + 2, acks=-1, records_len=300 * 1024),
        unknown_api(base + 3, body_len=200 * 1024, key=10001),
        # Larger than Envoy's per_connection_buffer_limit_bytes (1 MiB) in the shipped config.
        produce_v3(base + 4, acks=1, records_len=3 * MIB),
        metadata_v1(BIG_RESPONSE_CORR),   # answered with a 2 MiB response
        produce_v3(base + 6, acks=0, records_len=64 * 1024),
        api_versions_v999(base + 7),
        metadata_v1(base + 8),
    ]


def expected_deltas(frames: list[Frame]) -> dict[str, int]:
    exp: dict[str, int] = {}

    def add(k: str, n: int = 1) -> None:
        exp[k] = exp.get(k, 0) + n

    for f in frames:
        add(f"kafka.api.{f.api}.requests")
        if f.expects_response:
            add(f"kafka.api.{f.api}.responses")
        if f.unknown_api:
            add("kafka.requests_unknown_api")
        if f.unknown_version:
            add("kafka.requests_unknown_version")
    return exp


def connect(envoy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def close(sock: socket.socket) -> None:
    """shutdown() first: it wakes a Reader blocked in recv() and sends the FIN at once (a bare
    close() while another thread is in recv() on the socket sends nothing until that recv ends)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def send_in_chunks(sock: socket.socket, data: bytes, sizes: list[int], pause: float = 0.0) -> None:
    """Send data cut at the given chunk sizes (cycled), pausing between writes so that they
    reach Envoy as separate reads."""
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        sock.sendall(data[i:i + n])
        i += n
        k += 1
        if pause:
            time.sleep(pause)


class Reader:
    """Reads everything the client receives, continuously, in a background thread (so that big
    responses never back up into Envoy while the client is still sending)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                with self._cond:
                    self.buf += chunk
                    self._cond.notify_all()
        except OSError as e:
            self.error = e
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def read_at_least(self, n: int, timeout: float = 20.0) -> bytes:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.buf) >= n or self.closed, timeout)
            if len(self.buf) < n:
                state = "closed" if self.closed else ("timed out" if not ok else "?")
                raise ConnectionError(f"{state} after {len(self.buf)} of {n} bytes ({self.error!r})")
            return bytes(self.buf)

    def wait_closed(self, timeout: float = 20.0) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed, timeout):
                raise TimeoutError(f"connection still open after {timeout}s")
            return bytes(self.buf)


def run_exchange(envoy, server: RecordingServer, frames: list[Frame], chunk_sizes: list[int],
                 pause: float = 0.0) -> None:
    """One client connection: send the frames cut into chunks, read all responses, close, and
    check both directions byte for byte and the filter's counters."""
    before = envoy.kafka_stats()
    stream = b"".join(f.data for f in frames)
    n_conn = len(server.connections)
    sock = connect(envoy)
    reader = Reader(sock)
    try:
        # Send from a thread: a big response could otherwise fill the buffers both ways.
        sender = threading.Thread(target=send_in_chunks, args=(sock, stream, chunk_sizes, pause))
        sender.start()
        server.wait_connections(n_conn + 1)
        received = server.wait_received(len(stream), index=n_conn, timeout=60)
        sender.join(60)
        assert received == stream, first_difference("client -> broker", stream, received)
        # Every expected response, then nothing more.
        expected_responses = sum(1 for f in frames if f.expects_response)
        wait_until(lambda: _response_count(server, n_conn) >= expected_responses, 20,
                   what="the fake broker's responses")
        sent_back = bytes(server.connections[n_conn]["sent"])
        got = reader.read_at_least(len(sent_back))
        assert got == sent_back, first_difference("broker -> client", sent_back, got)
    finally:
        close(sock)
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="the connection to close")
    after = envoy.settled_kafka_stats()
    d = delta(after, before)
    exp = expected_deltas(frames)
    exp["kafka.connections_total"] = 1
    exp["kafka.request_bytes"] = len(stream)
    exp["kafka.response_bytes"] = len(sent_back)
    assert d == exp, f"counter deltas differ:\n  got      {sorted(d.items())}\n  expected {sorted(exp.items())}"


def _response_count(server: RecordingServer, index: int) -> int:
    frames, _ = parse_frames(bytes(server.connections[index]["sent"]))
    return len(frames)


def first_difference(what: str, expected: bytes, got: bytes) -> str:
    n = min(len(expected), len(got))
    i = next((k for k in range(n) if expected[k] != got[k]), n)
    return (f"{what}: bytes differ at offset {i} (expected {len(expected)} bytes, got {len(got)}): "
            f"expected {expected[i:i + 16].hex()} got {got[i:i + 16].hex()}")


@pytest.fixture
def server():
    with RecordingServer(respond=respond) as s:
        yield s


# ------------------------------------------------------------------------------------------
# byte-exact pass-through


def test_one_byte_at_a_time(make_envoy, server):
    envoy = make_envoy(server.port)
    run_exchange(envoy, server, small_frames(100), [1], pause=0.0005)


def test_all_frames_in_one_write(make_envoy, server):
    envoy = make_envoy(server.port)
    run_exchange(envoy, server, small_frames(200) + big_frames(300), [64 * MIB])


def test_awkward_chunks(make_envoy, server):
    """Cuts inside size fields, inside headers, across frame boundaries, and big writes."""
    envoy = make_envoy(server.port)
    rng = random.Random(4242)
    sizes = [1, 2, 3, 5, 7, 4093, 1, 65537, 3] + [rng.randint(1, 200_000) for _ in range(40)]
    run_exchange(envoy, server, big_frames(400) + small_frames(500), sizes, pause=0.0005)


def test_several_connections_keep_their_own_state(make_envoy, server):
    envoy = make_envoy(server.port)
    for i in range(3):
        run_exchange(envoy, server, small_frames(1000 * (i + 1)), [i + 1, 13, 1000], pause=0.0002)


# ------------------------------------------------------------------------------------------
# frames the filter cannot frame: on_frame_error


def oversized_header(size: int = 0x7FFFFFFF) -> bytes:
    # A size field followed by what would be a request header.
    return size.to_bytes(4, "big") + i16(3) + i16(1) + i32(9) + i16(len(CLIENT_ID)) + CLIENT_ID.encode()


@pytest.mark.parametrize("size_field, counter", [
    (0x7FFFFFFF, "kafka.frames_oversized"),
    (0xFFFFFFFF, "kafka.frames_invalid_size"),   # -1 as int32
], ids=["size-0x7fffffff", "size-minus-1"])
def test_bad_size_field_closes_connection(make_envoy, server, size_field, counter):
    envoy = make_envoy(server.port, plugin_config={"on_frame_error": "close"})
    before = envoy.kafka_stats()
    good = api_versions_v3(1).data
    bad = oversized_header(size_field) + bytes(100)
    sock = connect(envoy)
    try:
        sock.sendall(good)
        # The good frame goes through and is answered before the bad one is sent.
        reader = Reader(sock)
        reader.read_at_least(4)
        sock.sendall(bad)
        reader.wait_closed(timeout=20)
    finally:
        close(sock)
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="the connection to close")
    d = delta(envoy.settled_kafka_stats(), before)
    assert d.get(counter) == 1, d
    assert d.get("kafka.connections_closed_by_policy") == 1, d
    assert not d.get("kafka.connections_bypassed"), d
    # What reached the broker is the good frame and possibly part of the rest, never anything else.
    upstream = server.received(0)
    assert upstream.startswith(good) and (good + bad).startswith(upstream)


def test_frame_over_configured_max_closes_connection(make_envoy, server):
    envoy = make_envoy(server.port, plugin_config={"max_frame_bytes": 4096, "on_frame_error": "close"})
    before = envoy.kafka_stats()
    ok = produce_v3(1, acks=1, records_len=3000)          # under the limit
    too_big = produce_v3(2, acks=1, records_len=5000)     # over it
    sock = connect(envoy)
    try:
        sock.sendall(ok.data)
        reader = Reader(sock)
        reader.read_at_least(4)
        sock.sendall(too_big.data)
        reader.wait_closed(timeout=20)
    finally:
        close(sock)
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="the connection to close")
    d = delta(envoy.settled_kafka_stats(), before)
    assert d.get("kafka.frames_oversized") == 1, d
    assert d.get("kafka.connections_closed_by_policy") == 1, d
    assert per_api(d).get("Produce") == 1, d


@pytest.mark.parametrize("plugin_config, bad", [
    ({"on_frame_error": "pass_through"}, oversized_header(0x7FFFFFFF)),
    ({"on_frame_error": "pass_through", "max_frame_bytes": 4096}, produce_v3(9, acks=1, records_len=5000).data),
], ids=["size-0x7fffffff", "over-max_frame_bytes-4096"])
def test_pass_through_keeps_bytes_flowing(make_envoy, plugin_config, bad):
    answered = []

    def answer_first_only(frame: bytes) -> bytes | None:
        # Only the first frame is a request; what follows is not Kafka any more.
        if answered:
            return None
        answered.append(frame)
        return respond(frame)

    with RecordingServer(respond=answer_first_only) as server:
        _pass_through(make_envoy, server, plugin_config, bad)


def _pass_through(make_envoy, server, plugin_config, bad):
    envoy = make_envoy(server.port, plugin_config=plugin_config)
    before = envoy.kafka_stats()
    good = api_versions_v3(1).data
    rng = random.Random(99)
    tail1 = rng.randbytes(1000)
    tail2 = rng.randbytes(70_000)
    stream = good + bad + tail1 + tail2
    sock = connect(envoy)
    try:
        sock.sendall(good)
        reader = Reader(sock)
        first_response = respond(good[4:])
        assert reader.read_at_least(len(first_response)) == first_response
        send_in_chunks(sock, bad + tail1, [7, 1, 3000])
        server.wait_received(len(good + bad + tail1), index=0)
        # The connection is still open and still passes bytes, unchanged, both ways.
        sock.sendall(tail2)
        received = server.wait_received(len(stream), index=0)
        assert received == stream, first_difference("client -> broker", stream, received)
        extra = rng.randbytes(5000)
        server.connections[0]["sock"].sendall(extra)
        got = reader.read_at_least(len(first_response) + len(extra))
        assert got == first_response + extra, first_difference("broker -> client", first_response + extra, got)
    finally:
        close(sock)
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
               what="the connection to close")
    d = delta(envoy.settled_kafka_stats(), before)
    assert d.get("kafka.frames_oversized") == 1, d
    assert d.get("kafka.connections_bypassed") == 1, d
    assert not d.get("kafka.connections_closed_by_policy"), d
    assert d.get("kafka.request_bytes") == len(stream), d
    assert d.get("kafka.response_bytes") == len(first_response) + len(extra), d


def test_oversized_response_closes_connection(make_envoy):
    """The broker direction is framed too: a bad size field from the broker, on_frame_error=close."""
    def bad_responder(frame: bytes) -> bytes:
        return oversized_header(0x7FFFFFFF) + bytes(64)

    with RecordingServer(respond=bad_responder) as bad_server:
        envoy = make_envoy(bad_server.port, plugin_config={"on_frame_error": "close"})
        before = envoy.kafka_stats()
        sock = connect(envoy)
        try:
            sock.sendall(api_versions_v3(1).data)
            wait_closed(sock, timeout=20)
        finally:
            close(sock)
        wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 20,
                   what="the connection to close")
        d = delta(envoy.settled_kafka_stats(), before)
    assert d.get("kafka.frames_oversized") == 1, d
    assert d.get("kafka.connections_closed_by_policy") == 1, d


def test_unknown_api_key_and_version_are_counted(make_envoy, server):
    envoy = make_envoy(server.port)
    frames = [unknown_api(1, key=10000), api_versions_v999(2), unknown_api(3, key=32767, body_len=10)]
    run_exchange(envoy, server, frames, [1000])
    stats = envoy.kafka_stats()
    assert stats.get("kafka.requests_unknown_api") == 2
    assert stats.get("kafka.requests_unknown_version") == 1
    assert stats.get("kafka.api.unknown.requests") == 2
    assert crate_api_name(10000) == UNKNOWN_API


def test_per_api_counters_reach_envoy_while_the_connection_stays_open(make_envoy, server):
    """The per-API request and response counters are held in the filter between flushes; the
    root's one-second tick must report them for a connection that never closes (a long-lived
    client must not be invisible until it disconnects)."""
    envoy = make_envoy(server.port)
    before = envoy.kafka_stats()
    sock = connect(envoy)
    reader = Reader(sock)
    try:
        frames = [api_versions_v3(i) for i in range(1, 6)]
        sock.sendall(b"".join(f.data for f in frames))
        server.wait_connections(1)
        wait_until(lambda: _response_count(server, 0) >= len(frames), 20, what="the fake broker's responses")
        reader.read_at_least(len(server.connections[0]["sent"]))

        def reported() -> dict[str, float] | None:
            d = delta(envoy.kafka_stats(), before)
            full = (d.get("kafka.api.ApiVersions.requests") == len(frames)
                    and d.get("kafka.api.ApiVersions.responses") == len(frames))
            return d if full else None

        d = wait_until(reported, 10, what="the held per-API counters to be reported by the tick")
        # Still open: the counts came from the tick, not from the close.
        assert d.get("kafka.connections_active") == 1, d
    finally:
        close(sock)
