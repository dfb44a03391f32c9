#!/usr/bin/env python3
"""A throttled producer beside an unthrottled one, with the Kafka filter's rate limits.

Starts a tansu broker and an Envoy (envoy-config/envoy.yaml) whose Kafka filter has one limit:

    clients whose client id starts with `bulk-`: 1 MiB/s of Produce bytes each (key: client id)

Then `bulk-loader` and `checkout` both offer 5 MiB/s of 16 KiB messages for 10 s through the same
Envoy, at the same time. The filter holds `bulk-loader` the way a Kafka broker enforces a quota:
its requests go on, its responses carry throttle_time_ms, and its connection is paused until it is
back under its rate; it sees no error and loses nothing. `checkout` (librdkafka with either
`--client`: two kafka-python producers in one process share its interpreter lock) keeps its rate. Prints both
rates side by side and the limit's counters. Exits 1 if anything is not as it should be.

    .venv/bin/python examples/ratelimit.py [--client rdkafka|kafka-python]
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenario import Broker, Checks, Envoy, main, step  # noqa: E402
from load import MIB, Meter, run_kafka_python, run_rdkafka  # noqa: E402

LIMITS = {"limits": [{
    "name": "bulk",
    "match": {"client_id": {"prefix": "bulk-"}},
    "key": "client_id",
    "produce_bytes_per_second": {"rate": MIB, "burst": MIB},
}]}
SECONDS = 10.0


def scenario(client: str, broker: Broker, envoy: Envoy, check: Checks) -> None:
    run = run_rdkafka if client == "rdkafka" else run_kafka_python
    meters = {"bulk-loader": Meter(), "checkout": Meter()}
    errors: list[BaseException] = []

    def go(client_id: str) -> None:
        producer = run if client_id == "bulk-loader" else run_rdkafka
        try:
            producer(envoy.bootstrap, client_id, client_id, meters[client_id], seconds=SECONDS)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    step(f"{client}: `bulk-loader` (limited to 1 MiB/s) and `checkout` (no limit) each offer 5 MiB/s "
         f"for {SECONDS:.0f} s")
    threads = [threading.Thread(target=go, args=(c,)) for c in meters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    rates = {c: m.rate(*m.span()) / MIB for c, m in meters.items()}
    stats = envoy.settled_kafka_stats()
    print()
    print(f"  {'client id':<14}{'delivered':>12}{'rate':>12}{'errors':>8}")
    for c, m in meters.items():
        print(f"  {c:<14}{len(m.delivered) * 16 // 1024:>9} MiB{rates[c]:>8.2f} MiB/s{len(m.errors):>6}")
    print()
    for k in ("produce_bytes", "throttled", "throttle_ms"):
        print(f"  kafka.limit.bulk.limit_{k} = {stats.get(f'kafka.limit.bulk.limit_{k}', 0):,.0f}")
    print()
    check(not errors, f"both producers finished ({errors[:1]})")
    check(0.8 <= rates["bulk-loader"] <= 1.2, f"bulk-loader was held to about 1 MiB/s ({rates['bulk-loader']:.2f})")
    check(rates["checkout"] > 2 * rates["bulk-loader"], "checkout was not held")
    check(all(not m.errors and len(m.delivered) == m.sent for m in meters.values()),
          "no producer saw an error or lost a message")
    check(stats.get("kafka.limit.bulk.limit_throttled", 0) > 0, "the filter counted the throttling")


if __name__ == "__main__":
    sys.exit(main(__doc__, "ratelimit", LIMITS, scenario))
