#!/usr/bin/env python3
"""A canary next to production on one Kafka topic name, with the Kafka filter's topic rules.

Starts a tansu broker and an Envoy (envoy-config/envoy.yaml) whose Kafka filter has one rule:

    clients with client id `checkout-canary`: topic `orders` is the broker's `orders-canary`,
    consumer group `G` is the broker's `G-canary`

Then a production client (client id `checkout`) and the canary (client id `checkout-canary`), both
written for the topic `orders` and the group `orders-app`, create their topic, produce and consume
at the same time through the same Envoy. It prints what each client saw (metadata, delivery
reports, consumed messages, committed offsets, consumer groups), what is physically on the broker
(read over a direct connection to the broker, not through Envoy), and the filter's rewrite
counters. Exits 1 if anything is not as it should be.

    .venv/bin/python examples/canary.py [--client rdkafka|kafka-python]
"""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenario import Broker, Checks, Envoy, fmt_topics, main, rewrite_counters, span, step  # noqa: E402
from clients import CLIENT_OPS, BrokerView  # noqa: E402

RULES = {"rules": [{
    "name": "checkout-canary",
    "match": {"client_id": {"exact": "checkout-canary"}},
    "topics": {"map": {"orders": "orders-canary"}},
    "groups": {"add_suffix": "-canary"},
}]}


def scenario(client: str, broker: Broker, envoy: Envoy, check: Checks) -> None:
    Ops = CLIENT_OPS[client]
    prod, canary = Ops(envoy.bootstrap, "checkout"), Ops(envoy.bootstrap, "checkout-canary")
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def both(f, g):
        a, b = pool.submit(f), pool.submit(g)
        return a.result(), b.result()

    step(f"{client}: production creates `orders` with 3 partitions, the canary creates `orders` with 2")
    prod.create_topic("orders", 3)
    canary.create_topic("orders", 2)
    pv = [f"production-{i:03d}".encode() for i in range(15)]
    cv = [f"canary-{i:03d}".encode() for i in range(12)]
    step("both produce to `orders` at the same time, then consume it with consumer group `orders-app`")
    p_del, c_del = both(lambda: prod.produce("orders", pv), lambda: canary.produce("orders", cv))
    (p_got, p_com), (c_got, c_com) = both(lambda: prod.consume("orders", "orders-app", len(pv)),
                                          lambda: canary.consume("orders", "orders-app", len(cv)))
    p_topics, c_topics = prod.list_topics(), canary.list_topics()
    p_groups, c_groups = prod.list_groups(), canary.list_groups()

    print()
    print("What each client saw (through Envoy)")
    rows = [
        ("topics in metadata", fmt_topics(p_topics), fmt_topics(c_topics)),
        ("delivery reports", f"{len(p_del)} to {sorted({d.topic for d in p_del})}",
         f"{len(c_del)} to {sorted({d.topic for d in c_del})}"),
        ("consumed (group orders-app)", f"{span([m.value for m in p_got])} from {sorted({m.topic for m in p_got})}",
         f"{span([m.value for m in c_got])} from {sorted({m.topic for m in c_got})}"),
        ("committed offsets", ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(p_com.items())),
         ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(c_com.items()))),
        ("consumer groups listed", ", ".join(sorted(p_groups)), ", ".join(sorted(c_groups))),
    ]
    w = max(len(a) for _, a, _ in rows) + 2
    print(f"  {'':28} {'production (checkout)':{w}} canary (checkout-canary)")
    for name, a, b in rows:
        print(f"  {name:28} {a:{w}} {b}")

    print()
    print(f"What is physically on the broker (read directly from 127.0.0.1:{broker.port}, not through Envoy)")
    with BrokerView(broker.port) as view:
        b_topics = view.topics()
        b_orders, b_canary = view.values("orders"), view.values("orders-canary")
        b_groups = view.groups()
        b_com_prod = view.committed("orders-app", "orders", 3)
        b_com_canary = view.committed("orders-app-canary", "orders-canary", 2)
    print(f"  topics : {fmt_topics(b_topics)}")
    print(f"  orders        records {span(b_orders)}")
    print(f"  orders-canary records {span(b_canary)}")
    print(f"  groups : {', '.join(sorted(b_groups))}")
    print(f"  orders-app        committed on orders        {b_com_prod}")
    print(f"  orders-app-canary committed on orders-canary {b_com_canary}")

    stats = rewrite_counters(envoy)

    print()
    print("Checks")
    check(c_topics == {"orders": 2}, "the canary sees one `orders`, its own (2 partitions), and not orders-canary")
    check(p_topics.get("orders") == 3 and p_topics.get("orders-canary") == 2,
          "production is untouched: it sees the physical names")
    check({d.topic for d in c_del} == {"orders"} and {d.topic for d in p_del} == {"orders"},
          "both got their delivery reports for `orders`")
    check(sorted(b_canary) == sorted(cv), "every canary message is in orders-canary, and nothing else is")
    check(sorted(b_orders) == sorted(pv), "every production message is in orders, and nothing else is")
    check(sorted(m.value for m in c_got) == sorted(cv) and {m.topic for m in c_got} == {"orders"},
          "the canary consumed exactly its own messages, from `orders`")
    check(sorted(m.value for m in p_got) == sorted(pv), "production consumed exactly its own messages")
    check({"orders-app", "orders-app-canary"} <= b_groups, "two physical groups: orders-app and orders-app-canary")
    check({p: o for p, o in b_com_canary.items() if o > 0} == {p: o for (_, p), o in c_com.items()},
          "the canary's committed offsets are on orders-app-canary / orders-canary")
    check(c_groups == {"orders-app"}, "the canary lists only its own group, as `orders-app`")
    check(stats.get("kafka.rewrite.requests", 0) > 0 and not stats.get("kafka.rewrite.errors")
          and not stats.get("kafka.rewrite.refused"), "requests rewritten, none refused, no errors")


if __name__ == "__main__":
    sys.exit(main(__doc__, "canary", RULES, scenario))
