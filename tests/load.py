"""Producers that offer a fixed rate, and what they got delivered over time: for the rate-limit
tests and `make example-ratelimit`."""

from __future__ import annotations

import threading
import time

from clients import kafka_python_common, rdkafka_common

MIB = 1024 * 1024
OFFER = 5 * MIB
SECONDS = 15.0
WARMUP = 2.0
VALUE = 16 * 1024


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

    def span(self) -> tuple[float, float]:
        """From WARMUP after the first delivery to the last one (the send buffer drained): what
        was paid for before the window and delivered in it is then matched by nothing owed at
        its end."""
        with self.lock:
            return self.delivered[0][0] + WARMUP, self.delivered[-1][0]


def offer(send, meter: Meter, seconds: float, rate: float = OFFER) -> tuple[float, float]:
    """Send VALUE-byte messages at up to `rate` bytes/s for `seconds`; the measuring window."""
    started = time.monotonic()
    value = b"x" * VALUE
    n = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + n * VALUE / rate
        if now < due:
            time.sleep(min(due - now, 0.01))
            continue
        send(value)
        n += 1
        meter.sent += 1
    return started + WARMUP, time.monotonic()


def run_rdkafka(bootstrap: str, client_id: str, topic: str, meter: Meter,
                seconds: float = SECONDS, rate: float = OFFER) -> tuple[float, float]:
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

    window = offer(send, meter, seconds, rate)
    assert p.flush(60) == 0, "messages left undelivered"
    return window


def run_kafka_python(bootstrap: str, client_id: str, topic: str, meter: Meter,
                     seconds: float = SECONDS, rate: float = OFFER) -> tuple[float, float]:
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

    window = offer(send, meter, seconds, rate)
    p.flush(60)
    p.close()
    return window


