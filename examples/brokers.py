#!/usr/bin/env python3
"""Plain Envoy in front of a broker that advertises its own address, with and without the Kafka
filter's broker address rewrite (`broker_addresses`).

Starts a tansu broker that advertises itself (127.0.0.1:<broker port>, as a broker does whose
`advertised.listeners` nobody changed for Envoy), then runs the same client twice, each time
through a new Envoy (envoy-config/envoy.yaml):

1. without `broker_addresses`: the client bootstraps through Envoy, learns the broker's own
   address from Metadata, and from then on talks to the broker directly, past Envoy and its filter;
2. with `broker_addresses` mapping the broker's id to Envoy's listener: every broker address the
   client is given is Envoy's, and no connection of the client goes to the broker.

For each run it prints the brokers the client library used (librdkafka's statistics, or
kafka-python's cluster metadata), the connections of this process that went to the broker's port
directly (sampled from /proc beneath the library), and Envoy's connection counts and the filter's
broker address counters. Exits 1 if anything is not as it should be.

    .venv/bin/python examples/brokers.py [--client rdkafka|kafka-python]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenario import Checks, cli, step  # noqa: E402
from broker_handles import BROKERS_USED, DirectConnections, envoy_connections  # noqa: E402
from clients import BrokerView  # noqa: E402
from harness import Broker, Envoy, free_ports, require_wasm, wait_until  # noqa: E402


def through_envoy(client: str, broker: Broker, rewrite: bool, topic: str, workdir: Path,
                  check: Checks) -> tuple[set[str], set[tuple[int, int]], int, dict[str, float]]:
    """Runs the client through a new Envoy, with or without `broker_addresses`: (brokers it
    used, its direct connections to the broker, Envoy's listener port, the filter's counters)."""
    listener_port, admin_port = free_ports(2)
    plugin_config: dict = {}
    if rewrite:
        # The broker's id, as the broker itself reports it, mapped to this Envoy's listener.
        with BrokerView(broker.port) as view:
            (node,) = view.node_ids()
        plugin_config["broker_addresses"] = {"map": {str(node): f"127.0.0.1:{listener_port}"}}
    print("    plugin configuration: " + json.dumps(plugin_config))
    envoy = Envoy(broker.port, plugin_config=plugin_config, workdir=workdir, listener_port=listener_port,
                  admin_port=admin_port)
    envoy.start()
    try:
        with DirectConnections(broker.port) as direct:
            used = BROKERS_USED[client](envoy.bootstrap, topic)
        wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 30,
                   what="client connections to close")
        accepted, forwarded = envoy_connections(envoy)
        stats = envoy.settled_kafka_stats()
    finally:
        envoy.stop()
    rows = [(f"brokers the client used ({client})", ", ".join(sorted(used)) or "-"),
            ("its connections straight to the broker", len(direct.seen)),
            ("connections Envoy accepted / sent upstream", f"{accepted:.0f} / {forwarded:.0f}")]
    rows += [(f"kafka.broker_addresses_{k}", int(stats.get(f"kafka.broker_addresses_{k}", 0)))
             for k in ("rewritten", "unmapped", "versions_refused", "closed")]
    for label, value in rows:
        print(f"  {label:46} {value}")
    check(accepted >= 1, "the client bootstrapped through Envoy")
    return used, direct.seen, listener_port, stats


def run(client: str) -> int:
    require_wasm()
    workdir = Path(tempfile.mkdtemp(prefix="kafka-filter-brokers-"))
    (broker_port,) = free_ports(1)
    broker = Broker(workdir=workdir, port=broker_port)   # advertises its own address
    check = Checks()
    try:
        step(f"tansu on 127.0.0.1:{broker_port}, advertising 127.0.0.1:{broker_port} (its own address)")
        broker.start()
        with BrokerView(broker.port) as view:
            view.create_topic("payments", 1)
            view.create_topic("payments-2", 1)

        step(f"{client} through Envoy WITHOUT broker_addresses: produce and consume `payments` with a group")
        (workdir / "plain").mkdir()
        used, direct, _, _ = through_envoy(client, broker, False, "payments", workdir / "plain", check)
        check(any(f":{broker_port}/" in b for b in used) and bool(direct),
              "without the rewrite, the client followed the broker's own address past Envoy")

        step(f"{client} through Envoy WITH broker_addresses: the same")
        (workdir / "rewrite").mkdir()
        used, direct, listener, stats = through_envoy(client, broker, True, "payments-2",
                                                      workdir / "rewrite", check)
        check(bool(used) and all(f":{listener}/" in b for b in used),
              f"every broker the client used is Envoy's listener 127.0.0.1:{listener}")
        check(not direct, "no connection of the client went to the broker directly")
        check(stats.get("kafka.broker_addresses_rewritten", 0) > 0 and not stats.get("kafka.broker_addresses_unmapped"),
              "the filter rewrote the broker addresses, none unmapped")
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported with the logs
        check(False, f"the scenario ran to the end ({e!r})")
    finally:
        broker.stop()
        print(f"(logs in {workdir})")
    return check.exit_code()


if __name__ == "__main__":
    sys.exit(cli(__doc__, run))
