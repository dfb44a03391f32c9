#!/usr/bin/env python3
"""`make demo`: real Kafka traffic through Envoy with the Kafka filter, and what the filter saw.

Starts a tansu broker and an Envoy built from envoy-config/envoy.yaml (free ports, everything on
127.0.0.1), creates a topic, produces and consumes messages with two independent clients
(confluent-kafka / librdkafka and kafka-python, each with a consumer group), then prints the
filter's per-API counts, latency percentiles, byte counts and anomaly counters, what it saw per
client (client software and version, requests, records per topic) and each group's committed lag
(after more messages are produced than consumed), and an excerpt of Envoy's /stats/prometheus.
Everything it started is stopped on exit, on errors and on Ctrl-C.

    .venv/bin/python examples/demo.py [--messages N] [--keep-running]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from clients import (  # noqa: E402
    ConsumeChecker,
    RdkafkaOps,
    kafka_python_consume,
    kafka_python_create_topic,
    kafka_python_produce,
    message_plan,
    rdkafka_consume_group,
    rdkafka_create_topic,
    rdkafka_produce,
)
from harness import (  # noqa: E402
    Broker,
    Envoy,
    HarnessError,
    free_ports,
    histogram_quantile,
    per_api,
    require_wasm,
    wait_until,
)

# The shipped envoy.yaml with per-client metrics and consumer lag switched on.
DEMO_CONFIG = {"client_metrics": {"max_clients": 100, "max_topics": 100}, "consumer_lag": {}}

ANOMALIES = [
    ("requests_unknown_api", "requests with an API key the filter does not know"),
    ("requests_unknown_version", "requests with an API version newer than the filter knows"),
    ("frames_undecodable", "frames whose header could not be decoded"),
    ("frames_oversized", "size fields above max_frame_bytes"),
    ("frames_invalid_size", "negative size fields"),
    ("responses_unmatched", "responses matching no request in flight"),
    ("requests_unanswered", "requests never answered"),
    ("inflight_overflow", "requests past max_inflight_requests"),
    ("connections_closed_by_policy", "connections closed (on_frame_error=close)"),
    ("connections_bypassed", "connections passed through unparsed (on_frame_error=pass_through)"),
]


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def latency_table(envoy: Envoy, responses: dict[str, int], timeout: float = 15.0):
    """{api: (p50_ms, p99_ms)} from the Prometheus histogram, once Envoy has merged it (histograms
    reach the admin API at each stats flush, every 5 s by default)."""
    def complete():
        prom = envoy.prometheus()
        names = {n[: -len("_bucket")] for n in prom.names("kafka_response_latency_") if n.endswith("_bucket")}
        if len(names) != 1:
            return None
        name = names.pop()
        for api, n in responses.items():
            b = prom.histogram(name, kafka_api=api)
            if not b or b[-1][1] < n:
                return None
        return prom, name

    try:
        prom, name = wait_until(complete, timeout, interval=0.5, what="latency histograms")
    except TimeoutError:
        return {}, None
    scale = 1 / 1000 if name.endswith("_us") else 1.0  # to milliseconds
    out = {}
    for api in responses:
        b = prom.histogram(name, kafka_api=api)
        p50, p99 = histogram_quantile(b, 0.5), histogram_quantile(b, 0.99)
        out[api] = (None if p50 is None else p50 * scale, None if p99 is None else p99 * scale)
    return out, name


def report(envoy: Envoy) -> None:
    stats = envoy.settled_kafka_stats()
    requests = per_api(stats, "requests")
    responses = per_api(stats, "responses")
    lat, hist_name = latency_table(envoy, responses)

    print()
    print("What the Kafka filter counted (Envoy stats, wasmcustom.kafka.*)")
    print()
    header = f"  {'API':<28} {'requests':>9} {'responses':>10} {'p50 ms':>9} {'p99 ms':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for api in sorted(set(requests) | set(responses), key=lambda a: (-requests.get(a, 0), a)):
        p50, p99 = lat.get(api, (None, None))
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"  {api:<28} {requests.get(api, 0):>9} {responses.get(api, 0):>10} {fmt(p50):>9} {fmt(p99):>9}")
    print("  " + "-" * (len(header) - 2))
    print(f"  {'total':<28} {sum(requests.values()):>9} {sum(responses.values()):>10}")
    if hist_name:
        print(f"  (percentiles estimated from the Prometheus histogram {hist_name}, linear within a bucket)")
    else:
        print("  (latency histograms not flushed yet: no percentiles)")
    print()
    print(f"  client -> broker bytes : {human_bytes(stats.get('kafka.request_bytes', 0))}"
          f" ({int(stats.get('kafka.request_bytes', 0))} B)")
    print(f"  broker -> client bytes : {human_bytes(stats.get('kafka.response_bytes', 0))}"
          f" ({int(stats.get('kafka.response_bytes', 0))} B)")
    print(f"  connections            : {int(stats.get('kafka.connections_total', 0))} total,"
          f" {int(stats.get('kafka.connections_active', 0))} active")
    print()
    print("  anomalies:")
    for key, what in ANOMALIES:
        v = int(stats.get(f"kafka.{key}", 0))
        print(f"    {v:>6}  {key:<30} {what}")
    print()
    prom = envoy.prometheus()
    lines = [ln for ln in prom.lines("kafka_") if ("_bucket{" not in ln or 'le="+Inf"' in ln)
             and ln.startswith(("kafka_requests", "kafka_responses", "kafka_client_connections",
                                "kafka_client_topic_produced_records", "kafka_group_lag"))]
    print("Excerpt of /stats/prometheus (per-API counts, client software, records per client and topic,"
          " lag):")
    print()
    for ln in lines[:40]:
        print("  " + ln)
    if len(lines) > 40:
        print(f"  ... {len(lines) - 40} more lines: curl {envoy.admin_url}/stats/prometheus")
    print()


def per_client_report(stats: dict[str, float]) -> None:
    clients: dict[str, dict] = {}
    for name, v in stats.items():
        parts = name.split(".")
        if len(parts) < 6 or parts[:2] != ["kafka", "client"]:
            continue
        c = clients.setdefault(parts[2], {"software": set(), "requests": 0, "topics": {}})
        if name.endswith(".client_connections"):
            rest = name[len(f"kafka.client.{parts[2]}.principal.{parts[4]}.software."):-len(".client_connections")]
            soft, _, version = rest.partition(".version.")
            c["software"].add(f"{soft} {version}")
        elif name.endswith(".client_requests"):
            c["requests"] += int(v)
        elif ".topic." in name:
            topic, _, what = name.split(".topic.", 1)[1].rpartition(".client_topic_")
            c["topics"].setdefault(topic, {})[what] = int(v)
    print("Per client (client_metrics): client software from ApiVersions v3+ (KIP-511)")
    print()
    for cid, c in sorted(clients.items()):
        print(f"  {cid:<24} {', '.join(sorted(c['software'])) or '-':<44} {c['requests']:>6} requests")
        for topic, t in sorted(c["topics"].items()):
            print(f"      {topic:<20} produced {t.get('produced_records', 0):>6} records"
                  f" ({human_bytes(t.get('produced_bytes', 0))}),"
                  f" fetched {t.get('fetched_records', 0):>6} records ({human_bytes(t.get('fetched_bytes', 0))})")
    print()
    lags = sorted((name.split("."), int(v)) for name, v in stats.items()
                  if name.startswith("kafka.group.") and name.endswith(".group_lag"))
    print("Committed consumer lag (consumer_lag): log end minus the group's last accepted commit")
    print()
    for parts, v in lags:
        # kafka.group.<g>.topic.<t...>.partition.<p>.group_lag
        group, rest = parts[2], parts[4:-1]
        topic, partition = ".".join(rest[:-2]), rest[-1]
        print(f"  {group:<28} {topic:<20} partition {partition:>2}  lag {v:>6}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000, help="messages per client (default 1000)")
    ap.add_argument("--keep-running", action="store_true",
                    help="leave the broker and Envoy running until Ctrl-C (to curl the admin API)")
    args = ap.parse_args()

    # A SIGTERM stops the demo like Ctrl-C does, so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    try:
        wasm = require_wasm()
    except HarnessError as e:
        print(e, file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="kafka-filter-demo-"))
    listener_port, admin_port, broker_port = free_ports(3)
    broker = Broker(workdir=workdir, port=broker_port, advertised_port=listener_port)
    envoy = Envoy(broker_port, config="envoy.yaml", workdir=workdir, listener_port=listener_port,
                  admin_port=admin_port, wasm_path=wasm, plugin_config=DEMO_CONFIG)
    try:
        step(f"starting tansu on 127.0.0.1:{broker_port} (advertising Envoy's listener {listener_port})")
        broker.start()
        step(f"starting Envoy with {wasm}: listener 127.0.0.1:{listener_port},"
             f" admin {envoy.admin_url}")
        envoy.start()
        bootstrap = envoy.bootstrap

        seed = 42
        partitions = 3
        plan = message_plan(seed, args.messages, min(3, args.messages // 100), partitions)
        size = sum(m.size for m in plan)

        step("confluent-kafka: creating topic demo-rdkafka (3 partitions) through Envoy")
        rdkafka_create_topic(bootstrap, "demo-rdkafka", partitions)
        step(f"confluent-kafka: producing {len(plan)} messages ({human_bytes(size)})")
        t = time.monotonic()
        rdkafka_produce(bootstrap, "demo-rdkafka", seed, plan, extra={"client.id": "demo-producer"})
        step(f"  done in {time.monotonic() - t:.1f} s; consuming them with consumer group demo-rdkafka-group")
        checker = ConsumeChecker(seed, plan)
        t = time.monotonic()
        rdkafka_consume_group(bootstrap, "demo-rdkafka", "demo-rdkafka-group", checker, timeout=60,
                              extra={"client.id": "demo-consumer"})
        checker.verify()
        step(f"  {checker.count} messages back, byte-exact and in order, in {time.monotonic() - t:.1f} s")

        kp_plan = message_plan(seed + 1, max(1, args.messages // 5), 0, partitions)
        step("kafka-python: creating topic demo-kafka-python through Envoy")
        kafka_python_create_topic(bootstrap, "demo-kafka-python", partitions)
        step(f"kafka-python: producing {len(kp_plan)} messages")
        kafka_python_produce(bootstrap, "demo-kafka-python", seed + 1, kp_plan,
                             extra={"client_id": "demo-kp-producer"})
        step("  consuming them with consumer group demo-kafka-python-group")
        checker = ConsumeChecker(seed + 1, kp_plan)
        kafka_python_consume(bootstrap, "demo-kafka-python", partitions, checker, group="demo-kafka-python-group",
                             timeout=60, extra={"client_id": "demo-kp-consumer"})
        checker.verify()
        step(f"  {checker.count} messages back, byte-exact and in order")

        more = message_plan(seed + 2, 150, 0, partitions)
        step(f"confluent-kafka: producing {len(more)} more to demo-rdkafka; the group's consumer reads"
             " 50 of them and commits nothing (the log end moves, the commit does not: lag)")
        rdkafka_produce(bootstrap, "demo-rdkafka", seed + 2, more, extra={"client.id": "demo-producer"})
        RdkafkaOps(bootstrap, "demo-consumer").consume("demo-rdkafka", "demo-rdkafka-group", 50, commit=False)

        wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 30,
                   what="client connections to close")
        report(envoy)
        per_client_report(envoy.settled_kafka_stats())

        if args.keep_running:
            print(f"Broker and Envoy keep running: {envoy.admin_url}/stats/prometheus  (Ctrl-C to stop)")
            while envoy.poll() is None:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - shown with the logs that explain it
        print(f"\ndemo failed: {e!r}", file=sys.stderr)
        print(envoy.log_tail(40), file=sys.stderr)
        print(broker.log_tail(20), file=sys.stderr)
        return 1
    finally:
        step("stopping Envoy and tansu")
        envoy.stop()
        broker.stop()
        step(f"logs kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
