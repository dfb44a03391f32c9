"""Rate limits (`limits`), end to end: real Envoy 1.40 + the built filter + a real tansu broker +
real producers (librdkafka through confluent-kafka, and kafka-python).

A producer limited to 1 MiB/s that offers 5 MiB/s (as fast as its 4 MiB send buffer lets it)
for 15 s achieves 0.8-1.2 MiB/s after a 2 s warm-up, measured from the delivery reports; it sees
no error and loses no message. librdkafka does not back off by itself on throttle_time_ms: what
holds it is the filter pausing the connection, as a broker mutes it (KIP-219). A client under no
limit in the same Envoy, at the same time, keeps the rate it has alone (librdkafka, in both
runs).
"""

from __future__ import annotations

import threading
import time

import pytest

from clients import kafka_python_common, rdkafka_common

MIB = 1024 * 1024
LIMIT = 1 * MIB
OFFER = 5 * MIB
SECONDS = 15.0
WARMUP = 2.0
VALUE = 16 * 1024

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


class Meter:
    """Delivered bytes over time, and every error a client reported."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self.sent = 0

    def ok(self, n: int) -> None:
        with self.lock:
            self.delivered.append((time.monotonic(), n))

    def error(self, e: object) -> None:
        with self.lock:
            self.errors.append(str(e))

    def rate(self, start: float, end: float) -> float:
        with self.lock:
            got = sum(n for t, n in self.delivered if start <= t <= end)
        return got / (end - start)


def offer(send, meter: Meter, seconds: float) -> tuple[float, float]:
    """Send VALUE-byte messages at up to OFFER bytes/s for `seconds`; the measuring window."""
    started = time.monotonic()
    value = b"x" * VALUE
    n = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + n * VALUE / OFFER
        if now < due:
            time.sleep(min(due - now, 0.01))
            continue
        send(value)
        n += 1
        meter.sent += 1
    return started + WARMUP, time.monotonic()


def run_rdkafka(bootstrap: str, client_id: str, topic: str, meter: Meter) -> tuple[float, float]:
    from confluent_kafka import KafkaError, Producer

    p = Producer({**rdkafka_common(bootstrap), "client.id": client_id,
                  "queue.buffering.max.kbytes": 4096, "linger.ms": 5, "acks": "all",
                  "error_cb": lambda e: meter.error(e) if e.code() != KafkaError._TRANSPORT else None})

    def report(err, msg):  # type: ignore[no-untyped-def]
        if err is not None:
            meter.error(err)
        else:
            meter.ok(len(msg.value()))

    def send(value: bytes) -> None:
        while True:
            try:
                p.produce(topic, value, on_delivery=report)
                p.poll(0)
                return
            except BufferError:
                p.poll(0.01)  # the send buffer is full: wait for it, as an application would

    window = offer(send, meter, SECONDS)
    assert p.flush(60) == 0, "messages left undelivered"
    return window


def run_kafka_python(bootstrap: str, client_id: str, topic: str, meter: Meter) -> tuple[float, float]:
    from kafka import KafkaProducer

    p = KafkaProducer(**kafka_python_common(bootstrap), client_id=client_id, acks="all",
                      linger_ms=5, max_block_ms=60000, batch_size=256 * 1024)
    # kafka-python 3 has no bounded send buffer: the same 4 MiB bound, kept here.
    room = threading.Semaphore(4 * MIB // VALUE)

    def done(ok: bool, what: object) -> None:
        room.release()
        meter.ok(VALUE) if ok else meter.error(what)

    def send(value: bytes) -> None:
        room.acquire()
        f = p.send(topic, value)
        f.add_callback(lambda md: done(True, md))
        f.add_errback(lambda e: done(False, e))

    window = offer(send, meter, SECONDS)
    p.flush(60)
    p.close()
    return window


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
    slow_rate = slow.rate(*windows["slow"]) / MIB
    free_rate = free.rate(*windows["free"])
    stats = stack.envoy.settled_kafka_stats()
    print(f"{client}: limited {slow_rate:.2f} MiB/s, unlimited {free_rate / MIB:.2f} MiB/s "
          f"(alone {alone_rate / MIB:.2f}), throttled {stats.get('kafka.limit.slow-producers.throttled')}")
    assert not slow.errors and not free.errors, (slow.errors[:3], free.errors[:3])
    # Nothing lost: every message sent was delivered.
    assert len(slow.delivered) == slow.sent and len(free.delivered) == free.sent
    assert 0.8 <= slow_rate <= 1.2, f"limited producer at {slow_rate:.2f} MiB/s"
    # The unlimited client keeps most of its rate alone (it offers 5 MiB/s; the machine is shared).
    assert free_rate >= 0.7 * min(alone_rate, OFFER), (free_rate, alone_rate)
    assert stats.get("kafka.limit.slow-producers.throttled", 0) > 0
    assert stats.get("kafka.connections_closed_by_policy", 0) == 0
